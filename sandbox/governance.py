"""Governance: the policy decision point wired to the ledger, and the registry's facts.

One ``Governance`` per process and installation. Every decision the policy engine makes is
appended to the ledger before the answer is used; if the ledger cannot be written, the
answer is deny (the decision point's fail-closed rule). The ledger holds no free text, so a
decision's readable reasons are kept in the ``policy_decision`` table, bound to the ledger
entry by their SHA-256 (``details.reasons_sha256``).

This module also turns registry rows into the policy engine's facts, so that the API, the
CLI and the coordinator ask the same questions with the same facts.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Engine

from policies.activation import ActivationResult, activate
from policies.engine import Decision, PolicyDecisionPoint, Recorder
from policies.facts import (
    CompanyFacts,
    ConsentFacts,
    DatasetFacts,
    JobFacts,
    OperatorFacts,
)
from policies.policyset import DEFAULT_POLICY_DIR, hash_files, policy_files
from policies.tiers import TierConfig
from sandbox import identity
from sandbox.config import Settings, load_settings
from sandbox.db import get_engine, on_dispose
from sandbox.identity.installation import (
    filed_policy_signatures,
    installation_regulator_public_key,
    key_is_elsewhere,
)
from sandbox.ledger import Actor, Appended, DecisionRef, Ledger, LedgerRecord, Purpose, Resource
from sandbox.protocol.jobspec import JobSpec
from sandbox.registry import companies as company_store
from sandbox.registry import consents as consent_store
from sandbox.registry import jobs as job_store
from sandbox.registry.models import Company, Consent, Dataset, PolicyDecision
from sandbox.registry.policy_sets import PolicyStore, sign_hash
from sandbox.vocabulary import OPERATOR_ID, dataset_id

_ROLES = {
    "Company": "company",
    "Engineer": "engineer",
    "Regulator": "regulator",
    "Operator": "operator",
}
_RESOURCE_KINDS = {
    "Company": "company",
    "Dataset": "dataset",
    "Consent": "consent",
    "Job": "job",
    "AuditLog": "ledger",
    "PolicySet": "policy_set",
    "Registry": "company",
    "Account": "key",
}


def parse_uid(uid: str) -> tuple[str, str]:
    """('Company', 'acme') from Cedar's ``Sandbox::Company::"acme"``."""
    head, _, quoted = uid.rpartition("::")
    kind = head.rsplit("::", 1)[-1]
    return kind, quoted.strip('"')


def reasons_digest(reasons: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(reasons), ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class Annotation:
    """What the ledger record of a decision says beyond the decision itself."""

    job_id: str | None = None
    round: int | None = None
    purpose: str | None = None
    consent_id: str | None = None
    owner: str | None = None
    content_hash: str | None = None
    grade: str | None = None
    resource_id: str | None = None
    resource_kind: str | None = None
    participants: tuple[str, ...] | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


_annotation: contextvars.ContextVar[Annotation | None] = contextvars.ContextVar(
    "sandbox_decision_annotation", default=None
)


class Governance:
    """The sandbox's decision point, recording into its ledger."""

    def __init__(self, settings: Settings, policy_dir: Path = DEFAULT_POLICY_DIR):
        self.settings = settings
        self.engine = get_engine(settings.database_url)
        self.ledger = Ledger.open(settings)
        self.regulator_public_key = installation_regulator_public_key(settings)
        regulator = (
            None
            if key_is_elsewhere(settings)
            else identity.sandbox_key(settings.keys_dir, "regulator")
        )
        self.policy_store = PolicyStore(settings.home / "policy")
        for policy_set_hash, signature in filed_policy_signatures(settings).items():
            if self.policy_store.signature_for(policy_set_hash) != signature:
                self.policy_store.file_signature(policy_set_hash, signature)
        self.pdp, self.activations = start_policy_point(
            self.policy_store,
            self._record_decision,
            self.regulator_public_key,
            policy_dir=policy_dir,
            regulator_key=regulator,
        )

    # ------------------------------------------------------------------ recording
    def _record_decision(self, decision: Decision) -> None:
        annotation = _annotation.get() or Annotation()
        principal_kind, principal_id = parse_uid(decision.principal)
        resource_kind, resource_id = parse_uid(decision.resource)
        role = _ROLES.get(principal_kind, "system")
        actor = Actor(
            principal=principal_id or "unknown",
            role=role,  # type: ignore[arg-type]
            organisation=principal_id if role == "company" else None,
        )
        resource = Resource(
            kind=annotation.resource_kind or _RESOURCE_KINDS.get(resource_kind, "ledger"),  # type: ignore[arg-type]
            id=annotation.resource_id or resource_id or "unknown",
            owner=annotation.owner,
            content_hash=annotation.content_hash,
            grade=annotation.grade,  # type: ignore[arg-type]
        )
        purpose = None
        if annotation.purpose is not None:
            purpose = Purpose(
                name=annotation.purpose,
                legal_basis="consent",
                consent_id=annotation.consent_id or "none",
            )
        details: dict[str, Any] = {
            "facts_sha256": decision.facts_digest or "0" * 64,
            "reasons_sha256": reasons_digest(decision.reasons),
        }
        details.update(annotation.details)
        record = LedgerRecord(
            time=decision.time,
            action=f"decision.{decision.action}",
            actor=actor,
            resource=resource,
            purpose=purpose,
            decision=DecisionRef(
                decision_id=decision.decision_id,
                allowed=decision.allowed,
                policies=list(dict.fromkeys(decision.policies)),
                policy_set_hash=decision.policy_set_hash,
                context_digest=decision.context_digest or None,
            ),
            job_id=annotation.job_id,
            round=annotation.round,
            participants=list(annotation.participants) if annotation.participants else None,
            details=details,
        )
        appended = self.ledger.append(record)
        job_store.add_decision(
            self.engine,
            PolicyDecision(
                decision_id=decision.decision_id,
                ledger_index=appended.index,
                time=decision.time,
                principal=principal_id,
                role=role,
                action=decision.action,
                resource=resource.id,
                allowed=decision.allowed,
                policies=list(decision.policies),
                reasons=list(decision.reasons),
                errors=list(decision.errors),
                job_id=annotation.job_id,
                round=annotation.round,
            ),
        )

    def decide(
        self,
        principal: Any,
        action: str,
        resource: Any,
        context: Any = None,
        entities: Iterable[Any] = (),
        annotation: Annotation | None = None,
    ) -> Decision:
        """The policy's verdict, already in the ledger (or a recorded deny)."""
        token = _annotation.set(annotation)
        try:
            return self.pdp.decide(principal, action, resource, context, entities)
        finally:
            _annotation.reset(token)

    def record(self, record: LedgerRecord) -> Appended:
        return self.ledger.append(record)

    def record_many(self, records: Sequence[LedgerRecord]) -> list[Appended]:
        return self.ledger.append_many(records) if records else []

    # ---------------------------------------------------------------------- facts
    @property
    def tiers(self) -> TierConfig:
        active = self.pdp.active
        if active is None:
            raise RuntimeError("no policy set is active")
        return active.tiers

    def job_tier(self, datasets: Sequence[Dataset]) -> str:
        return self.tiers.risk_tier({d.industry for d in datasets}, {d.grade for d in datasets})


# ------------------------------------------------------------------ facts builders
def company_facts(company: Company) -> CompanyFacts:
    status = "active" if company.status == "active" else "suspended"
    return CompanyFacts(id=company.id, industry=company.industry, status=status)


def dataset_facts(dataset: Dataset) -> DatasetFacts:
    return DatasetFacts(
        id=dataset.id,
        company=dataset.company_id,
        industry=dataset.industry,
        grade=dataset.grade,
        personal_data=dataset.personal_data,
    )


def consent_facts(consent: Consent) -> ConsentFacts:
    return ConsentFacts(
        id=consent.id,
        company=consent.company_id,
        dataset=consent.dataset_id,
        purpose=consent.purpose,
        expires_at=consent.expires_at,
        revoked=consent.revoked_at is not None,
    )


@dataclass(frozen=True)
class JobWorld:
    """A job's facts and the facts of its datasets and consents, as the registry holds them."""

    job: JobFacts
    companies: dict[str, CompanyFacts]
    datasets: dict[str, Dataset]
    entities: tuple[Any, ...]

    @property
    def dataset_facts(self) -> list[DatasetFacts]:
        return [e for e in self.entities if isinstance(e, DatasetFacts)]


def job_world(
    engine: Engine,
    job_id: str,
    spec: JobSpec,
    engineer: str,
    approved: bool,
    participants: Sequence[str] | None = None,
) -> JobWorld:
    """Facts for a decision about a job: participants, their datasets and their consents
    for the job's purpose, read from the registry now."""
    members = list(participants if participants is not None else spec.companies)
    companies = company_store.companies_by_id(engine, members)
    ids = [dataset_id(c, spec.dataset) for c in members]
    datasets = company_store.datasets_named(engine, members, spec.dataset)
    consents = consent_store.consents_for(engine, ids, spec.purpose)
    job = JobFacts(
        id=job_id,
        engineer=engineer,
        purpose=spec.purpose,
        participants=tuple(members),
        datasets=tuple(d for d in ids if d in datasets),
        secure_aggregation=spec.privacy.secure_aggregation,
        dp_epsilon=Decimal(str(spec.privacy.dp.epsilon)) if spec.privacy.dp is not None else None,
        approved=approved,
    )
    entities: list[Any] = [dataset_facts(d) for d in datasets.values()]
    entities += [consent_facts(c) for c in consents]
    return JobWorld(
        job=job,
        companies={c: company_facts(companies[c]) for c in members if c in companies},
        datasets=datasets,
        entities=tuple(entities),
    )


def _bootstrap_signature(
    store: PolicyStore,
    regulator_public_key: str,
    regulator_key: Ed25519PrivateKey | None,
    files: Mapping[str, bytes],
) -> str:
    """The regulator's signature over the shipped set at first start: made with the key kept
    in this home, or the one the regulator filed from their own machine."""
    shipped_hash = hash_files(files)
    if regulator_key is None:
        filed = store.signature_for(shipped_hash)
        if filed is None:
            raise ValueError(
                f"first start: the shipped policy set ({shipped_hash}) needs the regulator's "
                "signature; on the regulator's machine `sandbox regulator init` writes it into "
                "the public folder this server reads"
            )
        return filed
    if identity.public_b64(regulator_key) != regulator_public_key:
        raise ValueError("the regulator key does not match the regulator public key")
    return sign_hash(regulator_key, shipped_hash)


def start_policy_point(
    store: PolicyStore,
    recorder: Recorder,
    regulator_public_key: str,
    *,
    policy_dir: Path = DEFAULT_POLICY_DIR,
    regulator_key: Ed25519PrivateKey | None = None,
    operator: OperatorFacts = OperatorFacts(OPERATOR_ID),
) -> tuple[PolicyDecisionPoint, list[ActivationResult]]:
    """The decision point of an installation, with its active set, and what starting did.

    First start (nothing stored): ``regulator_key`` signs the shipped set in ``policy_dir``, or,
    where the regulator's key is on their own machine, the signature they filed for it is used
    (bootstrap). Later starts: the stored set is re-verified and activated; then, if the
    shipped set differs from it, it is activated with the signature filed for its hash, if
    any. Every attempt is recorded. If nothing could be activated, the decision point denies
    everything.
    """
    pdp = PolicyDecisionPoint(None, recorder)
    results: list[ActivationResult] = []
    stored = store.load_active()
    if stored is None:
        files = policy_files(policy_dir)
        signature = _bootstrap_signature(store, regulator_public_key, regulator_key, files)
        result = activate(
            pdp, files, signature, regulator_public_key, operator=operator, bootstrap=True
        )
        results.append(result)
        if result.activated:
            store.save_active(files, signature)
        return pdp, results

    files, signature = stored
    results.append(activate(pdp, files, signature, regulator_public_key, operator=operator))
    shipped = policy_files(policy_dir)
    shipped_hash = hash_files(shipped)
    if shipped_hash != pdp.active_hash:
        new_signature = store.signature_for(shipped_hash)
        result = activate(pdp, shipped, new_signature, regulator_public_key, operator=operator)
        results.append(result)
        if result.activated and new_signature is not None:
            store.save_active(shipped, new_signature)
    return pdp, results


_instances: dict[tuple[str, str], Governance] = {}
_instances_lock = threading.Lock()


def _forget_on_dispose() -> None:
    with _instances_lock:
        _instances.clear()


on_dispose(_forget_on_dispose)


def get_governance(settings: Settings | None = None) -> Governance:
    """The process's governance for this installation (home and database)."""
    settings = settings or load_settings()
    key = (str(settings.home), settings.database_url)
    with _instances_lock:
        instance = _instances.get(key)
        if instance is None:
            instance = Governance(settings)
            _instances[key] = instance
        return instance
