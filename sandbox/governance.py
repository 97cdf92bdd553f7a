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
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import select

from policies.activation import PolicyStore, start
from policies.engine import Decision
from policies.facts import (
    CompanyFacts,
    ConsentFacts,
    DatasetFacts,
    EngineerFacts,
    JobFacts,
    OperatorFacts,
    RegulatorFacts,
)
from policies.policyset import DEFAULT_POLICY_DIR
from sandbox import identity
from sandbox.config import Settings, load_settings
from sandbox.db import get_engine, on_dispose, session_scope
from sandbox.jobspec import JobSpec
from sandbox.ledger import Actor, Appended, DecisionRef, Ledger, LedgerRecord, Purpose, Resource
from sandbox.registry.models import Company, Consent, Dataset, Job, PolicyDecision

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
        regulator = identity.sandbox_key(settings.keys_dir, "regulator")
        self.regulator_public_key = identity.public_b64(regulator)
        self.policy_store = PolicyStore(settings.home / "policy")
        self.pdp, self.activations = start(
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
        with session_scope(self.engine) as session:
            session.add(
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
                )
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
    def tiers(self):  # type: ignore[no-untyped-def]
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


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def consent_facts(consent: Consent) -> ConsentFacts:
    return ConsentFacts(
        id=consent.id,
        company=consent.company_id,
        dataset=consent.dataset_id,
        purpose=consent.purpose,
        expires_at=_utc(consent.expires_at),
        revoked=consent.revoked_at is not None,
    )


def principal_facts(role: str, principal_id: str, engine: Engine | None = None) -> Any:
    if role == "engineer":
        return EngineerFacts(principal_id)
    if role == "regulator":
        return RegulatorFacts(principal_id)
    if role == "operator":
        return OperatorFacts(principal_id)
    if role == "company":
        if engine is None:
            raise ValueError("company facts need the registry")
        with session_scope(engine) as session:
            company = session.get(Company, principal_id)
        if company is None:
            raise ValueError(f"no company {principal_id!r}")
        return company_facts(company)
    raise ValueError(f"unknown role {role!r}")


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
    with session_scope(engine) as session:
        companies = {
            c.id: c for c in session.exec(select(Company).where(Company.id.in_(members))).all()
        }  # type: ignore[attr-defined]
        ids = [f"{c}/{spec.dataset}" for c in members]
        datasets = {d.id: d for d in session.exec(select(Dataset).where(Dataset.id.in_(ids))).all()}  # type: ignore[attr-defined]
        consents = session.exec(
            select(Consent).where(Consent.dataset_id.in_(ids), Consent.purpose == spec.purpose)  # type: ignore[attr-defined]
        ).all()
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


def job_approved(job: Job) -> bool:
    return job.approved_at is not None


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
