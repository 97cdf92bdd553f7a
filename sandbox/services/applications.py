"""Joining is an application.

A company's signed request to join (``POST /companies``) is kept whole as an application
until the operator admits or refuses it; where the policy asks (important or core data,
personal data in a high-risk industry), a regulator admits it first. Each step is a decision
in the ledger (``join`` when it arrives, ``review_application`` for each review). Only an
admitted company is in the registry: before, it has no token, registers no dataset, holds
no consent and takes part in nothing.

The consents an application proposes are made when it arrives (ids, purposes, expiry), so
that the company's node records its own grant on its own premises at once; admission
registers exactly those.

An applicant learns nothing about which ids exist: an application under a taken or reserved
id gets the same answer as any other (with consents that will never be registered) and is
refused by a recorded ``join`` decision without being kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from policies.facts import CompanyFacts, RegistryFacts
from sandbox import identity
from sandbox.data.manifest import DatasetManifest, personal_looking_columns
from sandbox.errors import Conflict, Invalid
from sandbox.governance import Annotation, Governance
from sandbox.ledger import Actor, LedgerRecord, Resource
from sandbox.registry import applications as store
from sandbox.registry import consents as consent_store
from sandbox.registry.models import CompanyApplication, Consent
from sandbox.services.base import actor_of, authorize, denied, id_available, role_of
from sandbox.services.companies import Joined, check_enrolment, enrol
from sandbox.utc import rfc3339, utcnow
from sandbox.vocabulary import new_id

ID_POLICY = "baseline.company.id_available"
RECEIVED = (
    "application received: the operator reviews it (and a regulator where the data asks for "
    "one); once it is admitted, your key gets you a token (POST /auth/token)"
)


@dataclass(frozen=True)
class Received:
    """What an applicant is told, whatever became of its application."""

    consents: list[Consent]


def apply(
    gov: Governance,
    company_id: str,
    name: str,
    industry: str,
    public_key: str,
    manifest: DatasetManifest | None,
    purposes: tuple[str, ...],
    valid_days: int,
    request_digest: str,
) -> Received:
    """Receive a signed request to join: decided (``join``) and kept as a pending application,
    or, under an id that is taken or reserved, refused and answered the same way."""
    check_enrolment(company_id, industry, manifest, purposes)
    if store.application_of_request(gov.engine, request_digest) is not None:
        raise Conflict("this signed request was received already; sign a new one to apply again")
    consents = (
        consent_store.new_consents(company_id, manifest.name, purposes, timedelta(days=valid_days))
        if manifest is not None
        else []
    )
    for consent in consents:  # whole seconds: the node and the registry hold the same time
        consent.expires_at = consent.expires_at.replace(microsecond=0)
    decision = gov.decide(
        CompanyFacts(id=company_id, industry=industry),
        "join",
        RegistryFacts(),
        {"id_available": id_available(gov, company_id)},
        annotation=Annotation(
            resource_kind="company", resource_id=company_id, details={"view": "application"}
        ),
    )
    if not decision.allowed:
        if ID_POLICY in decision.policies:
            return Received(consents)  # the same answer as any other: nothing is told
        raise denied(decision)
    application = store.add_application(
        gov.engine,
        CompanyApplication(
            id=new_id("app"),
            company_id=company_id,
            name=name,
            industry=industry,
            public_key=public_key,
            manifest=manifest.model_dump(mode="json") if manifest is not None else None,
            consents=[
                {"id": c.id, "purpose": c.purpose, "expires_at": rfc3339(c.expires_at)}
                for c in consents
            ],
            valid_days=valid_days,
            request_sha256=request_digest,
        ),
    )
    gov.record(
        _record(
            "company.applied",
            _applicant(company_id),
            application,
            key_id=identity.key_id(public_key),
        )
    )
    return Received(consents)


def list_applications(gov: Governance, actor: Any, status: str | None = "pending") -> list[Any]:
    """The applications (pending ones by default): a review, decided as a listing."""
    authorize(
        gov,
        actor,
        "review_application",
        CompanyFacts(id="applicants", industry="any"),
        _context("list", None, None, "low", False),
        annotation=Annotation(resource_kind="company", resource_id="applications"),
    )
    return store.applications(gov.engine, status)


@dataclass(frozen=True)
class Confirmation:
    """What the reviewer confirms of an application's declarations: the industry (which sets
    the risk tier of every job the company takes part in) and whether its data is personal
    (which makes differential privacy compulsory)."""

    industry: str
    personal_data: bool


def declared(application: CompanyApplication) -> Confirmation:
    """The application's own declarations, as a confirmation (the demos' automatic review)."""
    manifest = application.manifest or {}
    return Confirmation(application.industry, bool(manifest.get("personal_data", False)))


def check_declarations(
    application: CompanyApplication, confirmed: Confirmation | None
) -> list[str]:
    """The columns that look personal in a dataset declared non-personal; refused unless the
    reviewer confirms the declarations, and refused if the confirmation differs from them
    (the company then applies again with what is true)."""
    manifest = (
        DatasetManifest.model_validate(application.manifest) if application.manifest else None
    )
    flagged = (
        [] if manifest is None or manifest.personal_data else personal_looking_columns(manifest)
    )
    if confirmed is None:
        if flagged:
            raise Invalid(
                f"application {application.id} declares no personal data, but its columns "
                f"{', '.join(flagged)} look personal: confirm its declared industry and "
                "personal-data flag, or refuse it"
            )
        return flagged
    if confirmed.industry != application.industry:
        raise Invalid(
            f"application {application.id} declares the industry {application.industry!r}, "
            f"not {confirmed.industry!r}: refuse it, and the company applies with the right one"
        )
    if manifest is not None and confirmed.personal_data != manifest.personal_data:
        declared = "holds" if manifest.personal_data else "holds no"
        raise Invalid(
            f"application {application.id} declares that its data {declared} personal data: "
            "refuse it, and the company applies with the right declaration"
        )
    return flagged


def admit(
    gov: Governance, actor: Any, application_id: str, confirmed: Confirmation | None = None
) -> CompanyApplication:
    """A regulator's admission is recorded on the application; the operator's admits the
    company: it joins with the application's key, manifest and consents. Once the policy
    allows the review, the declarations are checked (:func:`check_declarations`); what was
    confirmed is recorded."""
    application = store.get_application(gov.engine, application_id)
    _review(gov, actor, application, "admit")
    flagged = check_declarations(application, confirmed)
    checked: dict[str, Any] = {"confirmed": "industry+personal_data"} if confirmed else {}
    if flagged:  # how many, never the names (the ledger holds no company-chosen text)
        checked["looks_personal_columns"] = len(flagged)
    if role_of(actor) == "regulator":
        updated = store.update_pending(
            gov.engine, application_id, regulator_admitted_by=actor.id,
            regulator_admitted_at=utcnow(),
        )  # fmt: skip
        gov.record(_record("company.admitted_by_regulator", actor_of(actor), updated, **checked))
        return updated
    manifest = (
        DatasetManifest.model_validate(application.manifest) if application.manifest else None
    )
    joined: Joined = enrol(
        gov,
        application.company_id,
        application.name,
        application.industry,
        application.public_key,
        manifest,
        tuple(c["purpose"] for c in application.consents),
        node_dir=gov.settings.company_dir(application.company_id),
        consents=_proposed(application, manifest),
    )
    updated = store.update_pending(
        gov.engine, application_id, status="admitted", decided_by=actor.id, decided_at=utcnow()
    )
    gov.record(_record("company.admitted", actor_of(actor), updated,
                       company=joined.company.id, **checked))  # fmt: skip
    return updated


def refuse(gov: Governance, actor: Any, application_id: str, reason: str) -> CompanyApplication:
    """Refuse an application, with the reason (kept with the application)."""
    application = store.get_application(gov.engine, application_id)
    _review(gov, actor, application, "refuse")
    updated = store.update_pending(
        gov.engine, application_id, status="refused", decided_by=actor.id,
        decided_at=utcnow(), reason=reason,
    )  # fmt: skip
    gov.record(_record("company.application_refused", actor_of(actor), updated))
    return updated


def _review(gov: Governance, actor: Any, application: CompanyApplication, outcome: str) -> None:
    if application.status != "pending":
        raise Conflict(f"application {application.id} was {application.status} already")
    manifest = application.manifest or {}
    authorize(
        gov,
        actor,
        "review_application",
        CompanyFacts(id=application.company_id, industry=application.industry),
        _context(
            outcome,
            manifest.get("grade", "general"),
            bool(manifest.get("personal_data", False)),
            gov.tiers.industry_tier(application.industry),
            application.regulator_admitted_by is not None,
        ),
        annotation=Annotation(
            resource_kind="company",
            resource_id=application.company_id,
            owner=application.company_id,
            details={"application": application.id, "outcome": outcome},
        ),
    )


def _context(outcome: str, grade: str | None, personal: bool | None, tier: str,
             regulator_admitted: bool) -> dict[str, Any]:  # fmt: skip
    return {
        "outcome": outcome,
        "grade": grade or "general",
        "personal_data": bool(personal),
        "tier": tier,
        "regulator_admitted": regulator_admitted,
    }


def _proposed(application: CompanyApplication, manifest: DatasetManifest | None) -> list[Consent]:
    if manifest is None:
        return []
    proposed = consent_store.new_consents(
        application.company_id,
        manifest.name,
        [c["purpose"] for c in application.consents],
        timedelta(days=application.valid_days),
        ids=[c["id"] for c in application.consents],
    )
    for consent, asked in zip(proposed, application.consents, strict=True):
        consent.expires_at = datetime.fromisoformat(asked["expires_at"])  # as the node holds it
    return proposed


def _applicant(company_id: str) -> Actor:
    return Actor(principal=company_id, role="company", organisation=company_id)


def _record(action: str, actor: Actor, application: CompanyApplication,
            **details: Any) -> LedgerRecord:  # fmt: skip
    return LedgerRecord(
        action=action,
        actor=actor,
        resource=Resource(kind="company", id=application.company_id, owner=application.company_id),
        details={"application": application.id, **details},
    )
