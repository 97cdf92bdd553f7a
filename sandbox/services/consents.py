"""Consents: a company grants a dataset to a purpose until an expiry, and revokes it at any
time. The company's own node keeps its own record; a revocation is mirrored there first, so
that the node is never less careful than the registry."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from policies.facts import ConsentFacts
from sandbox.errors import check_id
from sandbox.governance import Annotation, Governance, consent_facts, dataset_facts
from sandbox.ledger import Actor, LedgerRecord, Purpose, Resource
from sandbox.node.home import LocalConsent, NodeHome
from sandbox.registry import companies as company_store
from sandbox.registry import consents as store
from sandbox.registry.models import Consent
from sandbox.services.base import authorize, company_in_question, hidden, node_update
from sandbox.utc import rfc3339, utcnow


def consent_record(action: str, consent: Consent) -> LedgerRecord:
    return LedgerRecord(
        action=action,
        actor=Actor(principal=consent.company_id, role="company", organisation=consent.company_id),
        resource=Resource(kind="consent", id=consent.id, owner=consent.company_id),
        purpose=Purpose(name=consent.purpose, legal_basis="consent", consent_id=consent.id),
        details={"dataset": consent.dataset_id, "expires": rfc3339(consent.expires_at)},
    )


def local_consent(consent: Consent, revoked_at: Any = None) -> LocalConsent:
    """The company node's own record of a consent."""
    return LocalConsent(
        consent.id,
        consent.dataset_id.split("/", 1)[1],
        consent.purpose,
        consent.expires_at,
        revoked_at,
    )


def grant_consent(
    gov: Governance,
    company_id: str,
    dataset: str,
    purpose: str,
    valid_for: timedelta = timedelta(days=365),
    node_dir: Path | None = None,
    actor: Any = None,
) -> Consent:
    """Grant consent; the company's own node record is updated when its folder is here.
    ``actor`` is who asks (the API's principal); by default the company itself."""
    check_id(purpose, "purpose")
    (consent,) = store.new_consents(company_id, dataset, [purpose], valid_for)
    _, facts, company = company_in_question(gov, company_id, actor)
    found = company_store.find_dataset(gov.engine, company_id, dataset)
    if found is None:
        raise hidden(gov, company, facts, f"company {company_id!r} has no dataset {dataset!r}")
    authorize(
        gov,
        company,
        "grant_consent",
        ConsentFacts(
            id=consent.id,
            company=company_id,
            dataset=found.id,
            purpose=purpose,
            expires_at=consent.expires_at,
        ),
        entities=[dataset_facts(found)],
        annotation=Annotation(owner=company_id, purpose=purpose, consent_id=consent.id),
    )
    granted = store.add_consent(gov.engine, consent)
    gov.record(consent_record("consent.granted", granted))
    node_update(node_dir, lambda node: node.record_grant(local_consent(granted)))
    return granted


def revoke_consent(
    gov: Governance,
    company_id: str,
    consent_id: str,
    reason: str = "",
    node_dir: Path | None = None,
    actor: Any = None,
) -> Consent:
    """Revoke consent: the next round of any job using it goes on without this company.
    ``actor`` is who asks (the API's principal); by default the company itself."""
    _, facts, company = company_in_question(gov, company_id, actor)
    consent = store.find_consent(gov.engine, company_id, consent_id)
    if consent is None:
        raise hidden(gov, company, facts, f"company {company_id!r} holds no consent {consent_id!r}")
    found = company_store.get_dataset(gov.engine, company_id, consent.dataset_id.split("/", 1)[1])
    authorize(
        gov,
        company,
        "revoke_consent",
        consent_facts(consent),
        entities=[dataset_facts(found)],
        annotation=Annotation(owner=company_id, purpose=consent.purpose, consent_id=consent_id),
    )
    # The company's own record first: a revocation there only makes its node more careful.
    node_update(node_dir, lambda node: _mirror_revocation(node, consent))
    revoked = store.mark_revoked(gov.engine, company_id, consent_id, reason)
    gov.record(consent_record("consent.revoked", revoked))
    return revoked


def _mirror_revocation(node: NodeHome, consent: Consent) -> None:
    """Record a revocation at the company's node; a consent the node never recorded (granted
    without its folder at hand) is recorded there as granted and revoked."""
    when = utcnow()
    if any(c.consent_id == consent.id for c in node.consents()):
        node.record_revocation(consent.id, when)
    else:
        node.record_grant(local_consent(consent, when))
