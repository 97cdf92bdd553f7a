"""The registry's tables: companies, their node keys, datasets, consents, jobs, rounds,
receipts, the privacy spent by each company, policy decisions' readable side, releases; the
principals of the API and their tokens.

Only manifests are stored here, never rows. JSON columns hold documents that are already
validated by their pydantic schema (the manifest, the job spec, round metrics).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from sandbox.utc import utcnow


class Company(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    industry: str = Field(max_length=100, index=True)
    public_key: str = Field(max_length=64, description="Ed25519 public key, base64 raw bytes")
    status: str = Field(default="active", max_length=16)
    joined_at: datetime = Field(default_factory=utcnow)


class NodeKey(SQLModel, table=True):
    """A company's SuperNode authentication key (deployment engine) and its registration.

    The public half (an OpenSSH ``ecdsa-sha2-nistp256`` line) is what the sandbox registers
    with its SuperLink; the SuperLink admits only nodes holding a registered key. The node id
    the SuperLink assigned is kept as text (Flower's node ids are unsigned 64-bit).
    """

    company_id: str = Field(primary_key=True, foreign_key="company.id", max_length=64)
    public_key: str = Field(max_length=256, unique=True)
    fingerprint: str = Field(max_length=64)
    added_at: datetime = Field(default_factory=utcnow)
    superlink: str | None = Field(default=None, max_length=255)
    flower_node_id: str | None = Field(default=None, max_length=20)
    registered_at: datetime | None = None


class Dataset(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=140)
    company_id: str = Field(foreign_key="company.id", index=True, max_length=64)
    name: str = Field(max_length=64)
    industry: str = Field(max_length=100)
    grade: str = Field(max_length=16)
    personal_data: bool
    row_count: int
    content_hash: str = Field(max_length=64)
    manifest: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    registered_at: datetime = Field(default_factory=utcnow)


class Consent(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=40)
    company_id: str = Field(foreign_key="company.id", index=True, max_length=64)
    dataset_id: str = Field(foreign_key="dataset.id", index=True, max_length=140)
    purpose: str = Field(max_length=100, index=True)
    granted_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    revoked_at: datetime | None = None
    revocation_reason: str | None = Field(default=None, max_length=500)


class Job(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=40)
    purpose: str = Field(max_length=100, index=True)
    spec: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    spec_hash: str = Field(max_length=64)
    bundle_hash: str | None = Field(
        default=None, max_length=64, description="SHA-256 of the filed code bundle"
    )
    risk_tier: str = Field(default="low", max_length=16)
    status: str = Field(default="filed", max_length=24, index=True)
    status_reason: str | None = Field(default=None, sa_column=Column(Text))
    filed_by: str = Field(max_length=64)
    filed_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    rounds_completed: int = 0
    admission_decision: str | None = Field(default=None, max_length=64)
    approved_by: str | None = Field(default=None, max_length=64)
    approved_at: datetime | None = None
    approval_note: str | None = Field(default=None, sa_column=Column(Text))
    model_hash: str | None = Field(default=None, max_length=64)
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    # What the policy decided for the job at admission (sandbox.protocol.warrant.WarrantRules)
    # and the signed warrant issued once it may run (canonical JSON).
    rules: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    warrant: str | None = Field(default=None, sa_column=Column(Text))


class Round(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("job_id", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=40)
    number: int
    status: str = Field(max_length=16)
    asked: list[str] = Field(sa_column=Column(JSON, nullable=False))
    took_part: list[str] = Field(sa_column=Column(JSON, nullable=False))
    missing: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    rejected: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    # Companies that were not asked this round, each with the reason (e.g. privacy budget).
    sat_out: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    metrics: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None


class Receipt(SQLModel, table=True):
    """A company's signed statement that its dataset served one round of one job."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=40)
    round: int
    company_id: str = Field(foreign_key="company.id", index=True, max_length=64)
    dataset_id: str = Field(max_length=140)
    task: str = Field(max_length=24)
    rows: int
    epsilon: float | None = None
    delta: float | None = None
    payload: str = Field(sa_column=Column(Text, nullable=False))
    signature: str = Field(max_length=128)
    received_at: datetime = Field(default_factory=utcnow)


class PolicyDecision(SQLModel, table=True):
    """A policy decision's readable side. The ledger entry at ``ledger_index`` is the record
    of truth; it carries the SHA-256 of ``reasons`` so that this text is bound to it."""

    __tablename__ = "policy_decision"

    decision_id: str = Field(primary_key=True, max_length=64)
    ledger_index: int = Field(index=True)
    time: datetime
    principal: str = Field(max_length=140, index=True)
    role: str = Field(max_length=16)
    action: str = Field(max_length=40, index=True)
    resource: str = Field(max_length=140)
    allowed: bool
    policies: list[str] = Field(sa_column=Column(JSON, nullable=False))
    reasons: list[str] = Field(sa_column=Column(JSON, nullable=False))
    errors: list[str] = Field(sa_column=Column(JSON, nullable=False))
    job_id: str | None = Field(default=None, max_length=40, index=True)
    round: int | None = None


class PrivacySpend(SQLModel, table=True):
    """One DP training run a company was asked for, and the privacy it cost.

    The row is written before the task is sent (``status="charged"``, at the coordinator's
    own prediction) and settled with the company's reported figures when its reply arrives
    (``"reported"``); a run whose reply never came stays charged, since the company may have
    trained. ``epsilon`` is this run's increment, ``epsilon_job`` the company's total in the
    job after it. A company's spend in a job is the largest ``epsilon_job`` of its rows there;
    its spend for a purpose is the sum of that over the purpose's jobs.
    """

    __tablename__ = "privacy_spend"

    id: int | None = Field(default=None, primary_key=True)
    company_id: str = Field(foreign_key="company.id", index=True, max_length=64)
    purpose: str = Field(max_length=100, index=True)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=40)
    round: int
    epsilon: float
    epsilon_job: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    status: str = Field(default="charged", max_length=16)
    reported_epsilon: float | None = None
    reported_epsilon_job: float | None = None
    note: str | None = Field(default=None, sa_column=Column(Text))
    charged_at: datetime = Field(default_factory=utcnow)
    settled_at: datetime | None = None


class Release(SQLModel, table=True):
    """One release decision on a job's model: the tier, the verdict with its reasons, the
    assessment it rests on, the contribution estimate, and where the model went (if anywhere)."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=40)
    model_hash: str = Field(max_length=64)
    tier: str = Field(max_length=16)
    allowed: bool
    outcome: str = Field(default="deny", max_length=32, sa_column_kwargs={"server_default": "deny"})
    """``allow``, ``deny``, or ``insufficient-evidence`` (held for a regulator's review)."""
    reasons: list[str] = Field(sa_column=Column(JSON, nullable=False))
    decided_by: str = Field(max_length=200)
    assessment: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    contributions: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    exported_to: str | None = Field(default=None, sa_column=Column(Text))
    decided_at: datetime = Field(default_factory=utcnow)


class Principal(SQLModel, table=True):
    """An engineer, regulator or operator who acts through the API, with the Ed25519 public key
    that proves it. Companies are principals through the company table: their id and the key
    they joined with."""

    id: str = Field(primary_key=True, max_length=64)
    role: str = Field(max_length=16, index=True)
    organisation: str | None = Field(default=None, max_length=64)
    public_key: str = Field(max_length=64, description="Ed25519 public key, base64 raw bytes")
    status: str = Field(default="active", max_length=16)
    registered_by: str = Field(max_length=64)
    registered_at: datetime = Field(default_factory=utcnow)
    disabled_at: datetime | None = None
    # A regulator's key record, endorsed by the installation's regulator key: what lets a
    # company's node trust this regulator's approvals (sandbox.protocol.warrant.KeyRecord).
    endorsement: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class ApiToken(SQLModel, table=True):
    """An API bearer token. Only the SHA-256 of the token is stored; the token itself is shown
    once, when it is issued. ``proof_sha256`` is the digest of the signed request it was issued
    for, unique, so that a signed request cannot be replayed for a second token."""

    __tablename__ = "api_token"

    id: str = Field(primary_key=True, max_length=40)
    role: str = Field(max_length=16)
    principal_id: str = Field(max_length=64, index=True)
    token_sha256: str = Field(max_length=64, unique=True, index=True)
    proof_sha256: str | None = Field(default=None, max_length=64, unique=True)
    channel: str = Field(max_length=16)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    revoked_at: datetime | None = None


class NodeRefusal(SQLModel, table=True):
    """A company's signed notice that its node refused a task (sandbox.protocol.notices):
    kept whole, so that anyone can verify the signature again and read the node's reason."""

    __tablename__ = "node_refusal"

    id: str = Field(primary_key=True, max_length=64, description="the notice's SHA-256")
    company_id: str = Field(index=True, max_length=64)
    job_id: str | None = Field(default=None, index=True, max_length=64)
    task: str = Field(max_length=64)
    cause: str = Field(max_length=64)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    payload: str = Field(sa_column=Column(Text, nullable=False))
    signature: str = Field(max_length=200)
    noticed_at: str = Field(max_length=40)
    via: str = Field(max_length=32)
    recorded_at: datetime = Field(default_factory=utcnow)
    ledger_index: int | None = None


class CompanyApplication(SQLModel, table=True):
    """A company's signed request to join, kept until the operator (and, where the policy asks,
    a regulator) admits or refuses it. Only an admitted company is in the registry."""

    __tablename__ = "company_application"

    id: str = Field(primary_key=True, max_length=40)
    company_id: str = Field(index=True, max_length=64)
    name: str = Field(max_length=200)
    industry: str = Field(max_length=200)
    public_key: str = Field(max_length=64)
    manifest: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    consents: list[dict[str, Any]] = Field(
        sa_column=Column(JSON, nullable=False),
        description="the consents it proposes: id, purpose, expires_at (its node holds them)",
    )
    valid_days: int
    status: str = Field(default="pending", index=True, max_length=16)
    request_sha256: str = Field(max_length=64, description="the signed request's digest")
    submitted_at: datetime = Field(default_factory=utcnow)
    regulator_admitted_by: str | None = Field(default=None, max_length=64)
    regulator_admitted_at: datetime | None = None
    decided_by: str | None = Field(default=None, max_length=64)
    decided_at: datetime | None = None
    reason: str | None = Field(default=None, sa_column=Column(Text))


class Voucher(SQLModel, table=True):
    """A compute voucher issued to a company under the written terms (tiers.toml
    [settlement]): it pays the company's compute cost in settlements until it is used up or
    expires. Amounts in cents."""

    id: str = Field(primary_key=True, max_length=40)
    company_id: str = Field(foreign_key="company.id", index=True, max_length=64)
    amount: int
    currency: str = Field(max_length=3)
    purpose: str = Field(max_length=200)
    valid_until: datetime
    issued_by: str = Field(max_length=64)
    issued_at: datetime = Field(default_factory=utcnow)
    decision_id: str = Field(max_length=64)


class VoucherUse(SQLModel, table=True):
    """What a settlement took from a voucher (cents)."""

    __tablename__ = "voucher_use"

    id: int | None = Field(default=None, primary_key=True)
    voucher_id: str = Field(foreign_key="voucher.id", index=True, max_length=40)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=40)
    amount: int


class Settlement(SQLModel, table=True):
    """A job's settlement statement (canonical JSON, signed with the operator's key); a
    revision replaces it after an upheld contest (the ledger keeps every revision's hash)."""

    job_id: str = Field(primary_key=True, foreign_key="job.id", max_length=40)
    revision: int = 1
    statement: str = Field(sa_column=Column(Text, nullable=False))
    signature: str = Field(max_length=128)
    settled_by: str = Field(max_length=64)
    settled_at: datetime = Field(default_factory=utcnow)


class SettlementDispute(SQLModel, table=True):
    """A company's contest of a job's settlement statement, and its resolution."""

    __tablename__ = "settlement_dispute"

    id: str = Field(primary_key=True, max_length=40)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=40)
    company_id: str = Field(foreign_key="company.id", max_length=64)
    revision: int
    reason: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="open", max_length=16)
    resolution: str | None = Field(default=None, sa_column=Column(Text))
    resolved_by: str | None = Field(default=None, max_length=64)
    opened_at: datetime = Field(default_factory=utcnow)
    resolved_at: datetime | None = None
