"""The API's request and response documents.

Requests are strict (unknown fields refused, every string and number bounded); responses
are built from the registry's rows by the ``of`` constructors here, so that routers stay thin.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from sandbox.data.manifest import DatasetManifest
from sandbox.identity import key_id
from sandbox.principals import NONCE_PATTERN, TOKEN_PATTERN
from sandbox.registry.models import (
    ApiToken,
    Company,
    Consent,
    Dataset,
    Job,
    PolicyDecision,
    Principal,
    Receipt,
    Round,
)
from sandbox.registry.service import ID_PATTERN, as_utc

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
"""A company, principal or purpose id: a letter or digit, then letters, digits, '_' or '-'."""
DatasetName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")]
JobId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")]
PublicKey = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9+/]{43}=$"),
    Field(description="Ed25519 public key: base64 of its 32 raw bytes"),
]
Signature = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{86}==$")]
Role = Literal["company", "engineer", "regulator", "operator"]
Hex = str


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


# ------------------------------------------------------------------------------ auth
class TokenRequest(Strict):
    """A token request signed with the principal's Ed25519 key over
    ``sandbox-api-token-request/v1\\n<role>\\n<principal_id>\\n<timestamp>\\n<nonce>``."""

    role: Role
    principal_id: Id
    timestamp: Annotated[str, StringConstraints(max_length=40)] = Field(
        examples=["2026-01-01T12:00:00Z"]
    )
    nonce: Annotated[str, StringConstraints(pattern=NONCE_PATTERN)]
    signature: Signature
    ttl_seconds: int = Field(default=8 * 3600, ge=60, le=30 * 86400)


class TokenIssued(BaseModel):
    token: str = Field(description="the bearer token; shown this once, stored only as a hash")
    token_type: Literal["Bearer"] = "Bearer"
    token_id: str
    role: str
    principal_id: str
    expires_at: datetime


class TokenInfo(BaseModel):
    id: str
    role: str
    principal_id: str
    channel: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, token: ApiToken) -> TokenInfo:
        return cls(
            id=token.id,
            role=token.role,
            principal_id=token.principal_id,
            channel=token.channel,
            created_at=as_utc(token.created_at),
            expires_at=as_utc(token.expires_at),
            revoked_at=_utc(token.revoked_at),
        )


class Me(BaseModel):
    role: str
    principal_id: str
    organisation: str | None
    token_id: str
    tokens: list[TokenInfo]


class SessionRequest(Strict):
    token: Annotated[str, StringConstraints(pattern=TOKEN_PATTERN)]


class SessionOut(BaseModel):
    role: str
    principal_id: str
    expires_at: datetime


# ------------------------------------------------------------------------ principals
class PrincipalIn(Strict):
    id: Id
    role: Role
    public_key: PublicKey
    organisation: Id | None = None


class PrincipalOut(BaseModel):
    id: str
    role: str
    organisation: str | None
    public_key: str
    public_key_id: str
    status: str
    registered_by: str
    registered_at: datetime
    disabled_at: datetime | None

    @classmethod
    def of(cls, p: Principal) -> PrincipalOut:
        return cls(
            id=p.id,
            role=p.role,
            organisation=p.organisation,
            public_key=p.public_key,
            public_key_id=key_id(p.public_key),
            status=p.status,
            registered_by=p.registered_by,
            registered_at=as_utc(p.registered_at),
            disabled_at=_utc(p.disabled_at),
        )


class PolicyActivation(Strict):
    """A policy set: its files by name (the schema, ``tiers.toml``, the ``.cedar`` packs) as
    UTF-8 text, and the regulator's signature over its hash (``sandbox policy sign``)."""

    files: dict[
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")],
        Annotated[str, StringConstraints(max_length=256_000)],
    ] = Field(max_length=64)
    signature: Signature


class PolicyInfo(BaseModel):
    id: str
    effect: str
    file: str
    reason: str


class PolicySetOut(BaseModel):
    hash: str
    policies: list[PolicyInfo]
    tiers: dict[str, dict[str, Any]]


# ------------------------------------------------------------------------- companies
class JoinRequest(Strict):
    """A company joins: its id, name, industry and Ed25519 public key; optionally the manifest
    its own node filled in when it prepared its vault (row counts, content hash: never rows)
    and consents over that dataset. Signed with the company's key: the header
    ``X-Sandbox-Signature`` holds the base64 signature over ``sandbox-api-join/v1\\n`` followed
    by the exact bytes of this body."""

    company_id: Id
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    industry: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    public_key: PublicKey
    manifest: DatasetManifest | None = None
    purposes: list[Id] = Field(default_factory=list, max_length=16)
    valid_days: int = Field(default=365, ge=1, le=3650)
    signed_at: Annotated[str, StringConstraints(max_length=40)] = Field(
        examples=["2026-01-01T12:00:00Z"]
    )


class CompanyOut(BaseModel):
    id: str
    name: str
    industry: str
    status: str
    public_key: str
    public_key_id: str
    joined_at: datetime

    @classmethod
    def of(cls, c: Company) -> CompanyOut:
        return cls(
            id=c.id,
            name=c.name,
            industry=c.industry,
            status=c.status,
            public_key=c.public_key,
            public_key_id=key_id(c.public_key),
            joined_at=as_utc(c.joined_at),
        )


class DatasetOut(BaseModel):
    id: str
    company_id: str
    name: str
    industry: str
    grade: str
    personal_data: bool
    row_count: int
    content_hash: str
    registered_at: datetime
    manifest: dict[str, Any]

    @classmethod
    def of(cls, d: Dataset) -> DatasetOut:
        return cls(
            id=d.id,
            company_id=d.company_id,
            name=d.name,
            industry=d.industry,
            grade=d.grade,
            personal_data=d.personal_data,
            row_count=d.row_count,
            content_hash=d.content_hash,
            registered_at=as_utc(d.registered_at),
            manifest=d.manifest,
        )


class ConsentIn(Strict):
    dataset: DatasetName = "census"
    purpose: Id
    valid_days: int = Field(default=365, ge=1, le=3650)


class RevocationIn(Strict):
    reason: Annotated[str, StringConstraints(max_length=500)] = ""


class ConsentOut(BaseModel):
    id: str
    company_id: str
    dataset_id: str
    purpose: str
    granted_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revocation_reason: str | None
    state: Literal["live", "expired", "revoked"]

    @classmethod
    def of(cls, c: Consent, now: datetime | None = None) -> ConsentOut:
        now = now or datetime.now(UTC)
        expires = as_utc(c.expires_at)
        state = "revoked" if c.revoked_at else ("expired" if expires <= now else "live")
        return cls(
            id=c.id,
            company_id=c.company_id,
            dataset_id=c.dataset_id,
            purpose=c.purpose,
            granted_at=as_utc(c.granted_at),
            expires_at=expires,
            revoked_at=_utc(c.revoked_at),
            revocation_reason=c.revocation_reason,
            state=state,  # type: ignore[arg-type]
        )


class JoinResult(BaseModel):
    company: CompanyOut
    dataset: DatasetOut | None
    consents: list[ConsentOut]


class ReceiptOut(BaseModel):
    """A company's statement, signed with its own key, that its dataset served one round of
    one job; ``payload`` is the signed text, ``signature`` the company's signature over it."""

    id: int
    job_id: str
    round: int
    company_id: str
    dataset_id: str
    task: str
    rows: int
    epsilon: float | None
    delta: float | None
    payload: str
    signature: str
    received_at: datetime

    @classmethod
    def of(cls, r: Receipt) -> ReceiptOut:
        return cls(
            id=r.id or 0,
            job_id=r.job_id,
            round=r.round,
            company_id=r.company_id,
            dataset_id=r.dataset_id,
            task=r.task,
            rows=r.rows,
            epsilon=r.epsilon,
            delta=r.delta,
            payload=r.payload,
            signature=r.signature,
            received_at=as_utc(r.received_at),
        )


class ReceiptPage(BaseModel):
    receipts: list[ReceiptOut]
    next_after: int | None = Field(description="pass as `after` for the next page; none: done")


class JobSpendOut(BaseModel):
    job_id: str
    purpose: str
    budget: float | None = Field(description="the job's epsilon per company (its spec)")
    epsilon: float = Field(
        description="epsilon charged to the company in this job (charged before each run, "
        "never below what the company reported)"
    )
    epsilon_receipted: float = Field(
        description="epsilon that the company's own signed training receipts state"
    )
    delta: float | None
    runs: int = Field(description="training runs charged")
    runs_unsettled: int = Field(description="runs charged whose report never came")
    receipts: int


class SpendOut(BaseModel):
    company_id: str
    jobs: list[JobSpendOut]
    by_purpose: dict[str, float]
    total_epsilon: float


# ------------------------------------------------------------------------------ jobs
class Admission(BaseModel):
    decision_id: str
    allowed: bool | None
    reasons: list[str]
    policies: list[str]
    ledger_index: int | None

    @classmethod
    def of(cls, decision_id: str, row: PolicyDecision | None) -> Admission:
        if row is None:
            return cls(
                decision_id=decision_id, allowed=None, reasons=[], policies=[], ledger_index=None
            )
        return cls(
            decision_id=decision_id,
            allowed=row.allowed,
            reasons=list(row.reasons),
            policies=list(row.policies),
            ledger_index=row.ledger_index,
        )


class JobOut(BaseModel):
    id: str
    purpose: str
    status: str
    status_reason: str | None
    risk_tier: str
    spec_hash: str
    filed_by: str
    filed_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    rounds_completed: int
    rounds_planned: int
    companies: list[str]
    approved_by: str | None
    approved_at: datetime | None
    approval_note: str | None
    model_hash: str | None
    admission: Admission | None
    spec: dict[str, Any]

    @classmethod
    def of(cls, job: Job, decision: PolicyDecision | None = None) -> JobOut:
        return cls(
            id=job.id,
            purpose=job.purpose,
            status=job.status,
            status_reason=job.status_reason,
            risk_tier=job.risk_tier,
            spec_hash=job.spec_hash,
            filed_by=job.filed_by,
            filed_at=as_utc(job.filed_at),
            started_at=_utc(job.started_at),
            ended_at=_utc(job.ended_at),
            rounds_completed=job.rounds_completed,
            rounds_planned=int(job.spec.get("rounds", 0)),
            companies=list(job.spec.get("companies", [])),
            approved_by=job.approved_by,
            approved_at=_utc(job.approved_at),
            approval_note=job.approval_note,
            model_hash=job.model_hash,
            admission=Admission.of(job.admission_decision, decision)
            if job.admission_decision
            else None,
            spec=job.spec,
        )


class JobPage(BaseModel):
    jobs: list[JobOut]
    offset: int
    limit: int


class Absence(BaseModel):
    company: str
    reason: str


class RoundOut(BaseModel):
    number: int
    status: str
    asked: list[str]
    took_part: list[str]
    missing: list[Absence]
    rejected: list[Absence]
    metrics: dict[str, Any]
    started_at: datetime
    ended_at: datetime | None

    @classmethod
    def of(cls, r: Round) -> RoundOut:
        return cls(
            number=r.number,
            status=r.status,
            asked=list(r.asked),
            took_part=list(r.took_part),
            missing=[Absence(**m) for m in r.missing],
            rejected=[Absence(**m) for m in r.rejected],
            metrics=r.metrics,
            started_at=as_utc(r.started_at),
            ended_at=_utc(r.ended_at),
        )


class RoundsOut(BaseModel):
    job_id: str
    status: str
    rounds: list[RoundOut]


class ResultOut(BaseModel):
    job_id: str
    status: str
    model_hash: str | None
    result: dict[str, Any]


class ApprovalIn(Strict):
    note: Annotated[str, StringConstraints(max_length=2000)] = ""


class RejectionIn(Strict):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)]


# ----------------------------------------------------------------------------- audit
class EntryOut(BaseModel):
    index: int
    leaf_hash: Hex
    entry: str = Field(
        description="the entry's exact bytes (canonical JSON), which the leaf hashes"
    )
    record: dict[str, Any] = Field(description="the parsed record; empty if it does not parse")
    intact: bool = Field(True, description="false: the stored bytes fail their leaf hash")
    problem: str | None = Field(None, description="why the stored entry fails its check")

    @classmethod
    def of(cls, item: Any) -> EntryOut:
        return cls(
            index=item.index,
            leaf_hash=item.leaf_hash.hex(),
            entry=item.entry.decode("utf-8"),
            record=record_json(item.record),
            intact=item.problem is None,
            problem=item.problem,
        )


def record_json(record: Any) -> dict[str, Any]:
    """A ledger record as JSON; ``{}`` for a stored entry that no longer parses."""
    return {} if record is None else record.model_dump(mode="json", exclude_none=True)


class EntryPage(BaseModel):
    entries: list[EntryOut]
    next_after: int | None = Field(description="pass as `after` for the next page; none: done")


class CheckpointOut(BaseModel):
    origin: str
    size: int
    root: Hex
    note: str = Field(description="the signed note (C2SP checkpoint) as text")
    signed_at: datetime
    public_key: str = Field(description="the log's Ed25519 public key, base64")
    verifier_key: str = Field(description="the same as a signed-note verifier key")


class ProofOut(BaseModel):
    """Entry ``index`` with the RFC 6962 audit path from its leaf hash to the root of the
    signed checkpoint ``checkpoint``. Verify with the log's public key alone."""

    index: int
    tree_size: int
    leaf_hash: Hex
    audit_path: list[Hex]
    root: Hex
    checkpoint: str
    entry: str = Field(description="the entry's bytes as stored (canonical JSON)")
    record: dict[str, Any] = Field(description="the parsed record; empty if it does not parse")
    intact: bool = Field(
        True,
        description="false: the stored bytes no longer match the leaf hash the tree commits "
        "to, so the proof will not verify from them",
    )
    problem: str | None = Field(None, description="why the stored entry fails its check")


class ConsistencyOut(BaseModel):
    old_size: int
    new_size: int
    proof: list[Hex]
    old_root: Hex = Field(description="as stored; trust it only from a verified checkpoint")
    new_root: Hex = Field(description="as stored; trust it only from a verified checkpoint")


class VerificationOut(BaseModel):
    ok: bool
    size: int
    first_bad_index: int | None
    problems: list[str]
    checkpoints: int
    attested_size: int


class Health(BaseModel):
    status: Literal["ok"]
