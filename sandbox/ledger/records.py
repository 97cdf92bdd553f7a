"""The ledger's record: what a regulator needs to know about one event, and nothing personal.

A record is a strict, versioned pydantic model. Unknown fields are refused, every string is
an identifier, a hash or a fixed vocabulary word (no free text, so no names, addresses or
messages can slip in), every list and the ``details`` map are bounded. The entry stored in the
log is the record's canonical JSON (RFC 8785), which is what the Merkle leaf hashes.

Version 1 is the only schema so far; a later version gets its own model and
:func:`parse_record` dispatches on ``schema_version``.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from sandbox.canonical import CanonicalizationError, canonical_json, is_canonical_json
from sandbox.ledger.errors import RecordError
from sandbox.utc import utcnow
from sandbox.vocabulary import MAX_PARTICIPANTS, Grade

SCHEMA_VERSION: Literal[1] = 1

# I-JSON (RFC 7493) integers: what every JSON reader represents exactly.
MAX_SAFE_INTEGER = 2**53 - 1

MAX_LIST_ITEMS = 64
MAX_DETAILS = 16
MAX_ENTRY_BYTES = 16_384

Identifier = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/=+-]{0,127}$", strict=True)
]
"""An id: letters, digits and ``. _ : / = + -``; no spaces, so no sentences or names with spaces."""

ActionName = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){0,3}$", max_length=64)
]
"""A dotted lower-case action, e.g. ``job.admit`` or ``consent.revoke``."""

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
DetailKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
DetailString = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/=+-]{0,63}$", strict=True)
]
SafeInt = Annotated[int, Field(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]
Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INTEGER)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]

Participants = Annotated[list[Identifier], Field(min_length=1, max_length=MAX_PARTICIPANTS)]

DetailValue = bool | SafeInt | Annotated[float, Field(allow_inf_nan=False)] | DetailString | None
DetailItem = DetailValue | Annotated[list[Identifier], Field(max_length=MAX_LIST_ITEMS)]

Role = Literal[
    "company", "company_node", "engineer", "regulator", "operator", "coordinator", "system"
]
ResourceKind = Literal[
    "company", "dataset", "consent", "job", "round", "model", "release", "policy_set", "receipt",
    "key", "ledger",
]  # fmt: skip
LegalBasis = Literal[
    "consent", "contract", "legal_obligation", "vital_interest", "public_task",
    "legitimate_interest",
]  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def _unique(values: list[str] | None, what: str) -> list[str] | None:
    if values is not None and len(set(values)) != len(values):
        raise ValueError(f"{what} must not repeat")
    return values


class Actor(_Strict):
    """Who acted: a principal (a pseudonymous id), its organisation and its role."""

    principal: Identifier
    role: Role
    organisation: Identifier | None = None


class Resource(_Strict):
    """What was acted on, whose data it is, and (for a dataset) its content hash and grade."""

    kind: ResourceKind
    id: Identifier
    owner: Identifier | None = Field(default=None, description="the data owner (a company id)")
    content_hash: Sha256Hex | None = None
    grade: Grade | None = None


class Purpose(_Strict):
    """Why: the purpose and its legal basis; consent names the consent that covers it."""

    name: Identifier
    legal_basis: LegalBasis
    consent_id: Identifier | None = None

    @model_validator(mode="after")
    def _consent_needs_its_id(self) -> Self:
        if self.legal_basis == "consent" and self.consent_id is None:
            raise ValueError("a purpose on the legal basis of consent names the consent_id")
        return self


class DecisionRef(_Strict):
    """A policy verdict: allowed or denied, by which policies of which policy set."""

    decision_id: Identifier
    allowed: bool
    policies: Annotated[list[Identifier], Field(max_length=MAX_LIST_ITEMS)] = []
    policy_set_hash: Sha256Hex
    context_digest: Sha256Hex | None = None
    reasons: Annotated[list[Identifier], Field(max_length=MAX_LIST_ITEMS)] = []

    @field_validator("policies", "reasons")
    @classmethod
    def _no_repeats(cls, values: list[str]) -> list[str]:
        _unique(values, "policy and reason lists")
        return values


class Privacy(_Strict):
    """Privacy parameters of a job or round and the budget it spent."""

    mechanism: Identifier | None = None
    epsilon: NonNegative | None = Field(default=None, description="the budget granted")
    delta: Annotated[float, Field(ge=0, lt=1)] | None = None
    epsilon_spent: NonNegative | None = None
    noise_multiplier: NonNegative | None = None
    max_grad_norm: NonNegative | None = None
    secure_aggregation: bool | None = None


def _new_record_id() -> str:
    return uuid.uuid4().hex


class LedgerRecord(_Strict):
    """One event in the ledger (schema version 1).

    ``time`` is when the event happened, in UTC. A record describing a policy verdict carries
    ``decision``; a federated round carries ``job_id``, ``round``, ``participants`` and
    ``privacy``; a release carries ``model_hash``. ``details`` holds at most
    16 small values (numbers, booleans, short ids or lists of ids), never text.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    record_id: Identifier = Field(default_factory=_new_record_id)
    time: AwareDatetime = Field(default_factory=utcnow)
    action: ActionName
    actor: Actor
    resource: Resource | None = None
    purpose: Purpose | None = None
    decision: DecisionRef | None = None
    job_id: Identifier | None = None
    round: Count | None = None
    participants: Participants | None = None
    privacy: Privacy | None = None
    model_hash: Sha256Hex | None = None
    correlation_id: Identifier | None = None
    details: Annotated[dict[DetailKey, DetailItem], Field(max_length=MAX_DETAILS)] | None = None

    @field_validator("time")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @field_validator("participants")
    @classmethod
    def _participants_unique(cls, values: list[str] | None) -> list[str] | None:
        return _unique(values, "participants")

    @field_serializer("time")
    def _time_text(self, value: datetime) -> str:
        # Fixed width, so that the text sorts as the time does (the ``recorded_at`` column).
        return format_time(value)

    @classmethod
    def decision_record(
        cls,
        *,
        action: str,
        actor: Actor,
        decision: DecisionRef,
        resource: Resource | None = None,
        purpose: Purpose | None = None,
        **fields: Any,
    ) -> LedgerRecord:
        """A record of a policy verdict (the policy engine's usual entry)."""
        return cls(
            action=action,
            actor=actor,
            decision=decision,
            resource=resource,
            purpose=purpose,
            **fields,
        )

    @classmethod
    def round_record(
        cls,
        *,
        actor: Actor,
        job_id: str,
        round: int,
        participants: list[str],
        privacy: Privacy | None = None,
        action: str = "round.complete",
        **fields: Any,
    ) -> LedgerRecord:
        """A record of one federated round: who took part and what it cost."""
        return cls(
            action=action,
            actor=actor,
            job_id=job_id,
            round=round,
            participants=participants,
            privacy=privacy,
            **fields,
        )


def format_time(value: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC (naive values are refused, not guessed)."""
    if value.tzinfo is None:
        raise ValueError("a time without a time zone is ambiguous; give it in UTC")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_entry(record: LedgerRecord) -> bytes:
    """The bytes the ledger stores and hashes for ``record``: RFC 8785 canonical JSON.

    The bytes are parsed back through the schema before they are returned, so what is stored
    is exactly something the schema accepts (even if a caller mutated a list inside the
    frozen model after building it).
    """
    if not isinstance(record, LedgerRecord):
        raise TypeError(f"the ledger takes LedgerRecord, not {type(record).__name__}")
    try:
        entry = canonical_json(record.model_dump(mode="json", exclude_none=True))
    except CanonicalizationError as exc:
        raise RecordError(f"record {record.record_id} has no canonical JSON: {exc}") from exc
    if len(entry) > MAX_ENTRY_BYTES:
        raise RecordError(
            f"record {record.record_id} is {len(entry)} bytes; at most {MAX_ENTRY_BYTES}"
        )
    try:
        LedgerRecord.model_validate_json(entry)
    except ValidationError as exc:
        raise RecordError(f"record {record.record_id} does not fit its schema: {exc}") from exc
    return entry


def parse_record(entry: bytes) -> LedgerRecord:
    """The record stored as ``entry`` (canonical JSON), validated against its schema version."""
    try:
        version = json.loads(entry).get("schema_version")
    except (ValueError, AttributeError) as exc:
        raise RecordError("entry is not a JSON object") from exc
    if version != SCHEMA_VERSION:
        raise RecordError(f"unknown record schema version {version!r}")
    try:
        return LedgerRecord.model_validate_json(entry)
    except ValidationError as exc:
        raise RecordError(f"entry does not fit record schema {version}: {exc}") from exc


def is_canonical(entry: bytes) -> bool:
    """Whether ``entry`` is the RFC 8785 canonical form of itself (a JSON object in UTF-8,
    serialised exactly as :func:`canonical_entry` would)."""
    return entry[:1] == b"{" and is_canonical_json(entry)
