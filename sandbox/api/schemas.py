"""The API's request and response documents.

Requests are strict (unknown fields refused, every string and number bounded); responses
are read from the registry's rows by their attributes (``Model.model_validate(row)``), so
that routers stay thin.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, computed_field

from sandbox.data.manifest import DatasetManifest
from sandbox.identity import key_id
from sandbox.identity.requests import NONCE_PATTERN
from sandbox.services.principals import TOKEN_PATTERN
from sandbox.utc import utcnow
from sandbox.vocabulary import Id, JobId, Role

__all__ = ["Id", "JobId"]

DatasetName = Id
PublicKey = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9+/]{43}=$"),
    Field(description="Ed25519 public key: base64 of its 32 raw bytes"),
]
Signature = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{86}==$")]
Hex = str


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    """A response read from a row by its attributes."""

    model_config = ConfigDict(from_attributes=True)


# ------------------------------------------------------------------------------ auth
class TokenRequest(Strict):
    """A token request signed with the principal's Ed25519 key over
    ``sandbox-api-token-request/v2\\n<role>\\n<principal_id>\\n<timestamp>\\n<nonce>\\n``
    ``<ttl_seconds>`` (the token's life is signed)."""

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


class TokenInfo(Out):
    id: str
    role: str
    principal_id: str
    channel: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


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
    endorsement: dict[str, Any] | None = Field(
        default=None,
        description="a regulator's key record signed by the installation's regulator key "
        "(`sandbox regulator endorse`); needed where that key is not on the server",
    )


class PrincipalOut(Out):
    id: str
    role: str
    organisation: str | None
    public_key: str
    status: str
    registered_by: str
    registered_at: datetime
    disabled_at: datetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def public_key_id(self) -> str:
        return key_id(self.public_key)


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


class CompanyOut(Out):
    id: str
    name: str
    industry: str
    status: str
    public_key: str
    joined_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def public_key_id(self) -> str:
        return key_id(self.public_key)


class DatasetOut(Out):
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


class ConsentIn(Strict):
    dataset: DatasetName = "census"
    purpose: Id
    valid_days: int = Field(default=365, ge=1, le=3650)


class RevocationIn(Strict):
    reason: Annotated[str, StringConstraints(max_length=500)] = ""


class ConsentOut(Out):
    id: str
    company_id: str
    dataset_id: str
    purpose: str
    granted_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revocation_reason: str | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def state(self) -> Literal["live", "expired", "revoked"]:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= utcnow() else "live"


class SandboxKeysOut(BaseModel):
    """The sandbox's public keys a company's node pins when it joins: the operator's (it
    signs job warrants) and the installation's regulator key (it signs or endorses
    approvals). Compare their fingerprints with the ones the sandbox publishes."""

    operator: str
    regulator: str
    operator_fingerprint: str
    regulator_fingerprint: str


class ReceiptOut(Out):
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
        description="epsilon for the job that the company's node states in its signed "
        "receipts (its own accountant, over its DP-trained baseline and every round)"
    )
    delta: float | None
    runs: int = Field(description="DP runs charged: the local-only baseline and each round")
    runs_unsettled: int = Field(description="runs charged whose report never came")
    receipts: int


class SpendOut(BaseModel):
    company_id: str
    jobs: list[JobSpendOut]
    by_purpose: dict[str, float]
    total_epsilon: float


# ------------------------------------------------------------------------------ jobs
class Admission(Out):
    decision_id: str
    allowed: bool | None
    reasons: list[str]
    policies: list[str]
    ledger_index: int | None


class JobOut(Out):
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
    approved_by: str | None
    approved_at: datetime | None
    approval_note: str | None
    model_hash: str | None
    admission: Admission | None = None
    spec: dict[str, Any]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def rounds_planned(self) -> int:
        return int(self.spec.get("rounds", 0))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def companies(self) -> list[str]:
        return list(self.spec.get("companies", []))


class JobPage(BaseModel):
    jobs: list[JobOut]
    offset: int
    limit: int


class Absence(BaseModel):
    company: str
    reason: str


class RoundOut(Out):
    number: int
    status: str
    asked: list[str]
    took_part: list[str]
    missing: list[Absence]
    rejected: list[Absence]
    metrics: dict[str, Any]
    started_at: datetime
    ended_at: datetime | None


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
    """A regulator's approval: the note, when it was signed, and the regulator's Ed25519
    signature over the approval statement (``GET /approvals/{job_id}/statement`` gives the
    bytes to sign for a note and a time)."""

    note: Annotated[str, StringConstraints(max_length=2000)] = ""
    signed_at: Annotated[str, StringConstraints(max_length=40)]
    signature: Signature


class ApprovalStatementOut(BaseModel):
    statement: str = Field(description="the exact bytes to sign (UTF-8 canonical JSON)")
    signed_at: str


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


class SignedNoticeIn(Strict):
    payload: Annotated[str, StringConstraints(max_length=8000)]
    signature: Signature


class RefusalsIn(Strict):
    """Signed notices of the company's node's refusals (``sandbox company refusals`` prints
    them), for the ledger."""

    notices: Annotated[list[SignedNoticeIn], Field(min_length=1, max_length=500)]


class RefusalOut(Out):
    """A refusal of the company's node: its signed notice, the node's reason, where it is in
    the ledger."""

    id: str
    company_id: str
    job_id: str | None
    task: str
    cause: str
    reason: str
    payload: str
    signature: str
    noticed_at: str
    via: str
    recorded_at: datetime
    ledger_index: int | None
