"""Receipts: a company's signed statement that its dataset served one task of one job.

"Dataset D served job J round R (task T) with n rows, spending epsilon e." The payload is
canonical JSON (RFC 8785) signed with the company's Ed25519 key, so the coordinator can
record a company's participation but cannot forge it. It binds the job's warrant (its hash),
the plan's digest, the round, the epsilon the task spent and the node's running totals after
it (for the job, the purpose and the dataset), and points into the company's own hash-chained
log (``log_index``, ``log_hash``) and, since version 3, to the latest checkpoint of the
sandbox's ledger that the node cosigned as a witness (``ledger``), and, since version 4, what
the task cost the node (:class:`Metering`: CPU and wall seconds, bytes in and out). Version 1
receipts (before warrants) carry none of the warrant and totals; version 2 no ledger
checkpoint; version 3 no metering.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sandbox import identity
from sandbox.canonical import canonical_json

RECEIPT_TYPE = "sandbox-receipt"
RECEIPT_VERSIONS = (1, 2, 3, 4)
_V2_FIELDS = {"warrant", "epsilon_job", "epsilon_purpose", "epsilon_dataset"}
_V3_FIELDS = {"ledger"}
_V4_FIELDS = {"metering"}


class Metering(BaseModel):
    """What one task cost the company's node, measured there: CPU seconds (user and system,
    of the node's process, over the task's own work), wall seconds, and the bytes of the task
    received and of the reply sent (before the receipt). The company's business data, not
    personal data: signed in its receipt, shown to the company, to others in aggregate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu_seconds: float = Field(ge=0)
    wall_seconds: float = Field(ge=0)
    bytes_in: int = Field(ge=0)
    bytes_out: int = Field(ge=0)


class ReceiptPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = RECEIPT_TYPE
    version: int = 4
    company: str
    dataset: str
    dataset_hash: str
    job: str
    round: int = Field(ge=0)
    task: str
    purpose: str
    consent: str | None
    plan: str
    warrant: str | None = None
    rows: int = Field(ge=0)
    epsilon: float | None = None
    delta: float | None = None
    epsilon_job: float | None = None
    epsilon_purpose: float | None = None
    epsilon_dataset: float | None = None
    time: str
    log_index: int = Field(ge=0)
    log_hash: str
    ledger: str | None = Field(default=None, max_length=120)
    """``<size> <base64 root>``: the latest checkpoint of the sandbox's ledger that this
    node had cosigned as a witness when it signed (version 3)."""
    metering: Metering | None = None
    """What the task cost the node (version 4)."""

    def canonical(self) -> bytes:
        newer = {
            1: _V2_FIELDS | _V3_FIELDS | _V4_FIELDS,
            2: _V3_FIELDS | _V4_FIELDS,
            3: _V4_FIELDS,
        }.get(self.version, set())
        return canonical_json(self.model_dump(mode="json", exclude=newer))


class ReceiptError(ValueError):
    """A receipt that cannot be trusted: malformed, for another job or round, or badly signed."""


def sign_receipt(key: Any, payload: ReceiptPayload) -> tuple[str, str]:
    """The receipt as it travels: (canonical payload text, base64 signature)."""
    body = payload.canonical()
    return body.decode("utf-8"), identity.sign(key, body)


def verify_receipt(
    payload_text: str,
    signature: str,
    public_key: str,
    *,
    company: str,
    job: str,
    round: int,
    task: str,
) -> ReceiptPayload:
    """The payload, if the signature is the company's and the receipt is for this task."""
    try:
        payload = ReceiptPayload.model_validate(json.loads(payload_text))
    except (ValueError, ValidationError) as exc:
        raise ReceiptError(f"the receipt is not a receipt: {exc}") from exc
    if payload.type != RECEIPT_TYPE or payload.version not in RECEIPT_VERSIONS:
        raise ReceiptError("the receipt has an unknown type or version")
    if payload.canonical() != payload_text.encode("utf-8"):
        raise ReceiptError("the receipt payload is not in canonical form")
    if not identity.verify(public_key, payload_text.encode("utf-8"), signature):
        raise ReceiptError(f"the receipt's signature is not {company}'s")
    expected = {"company": company, "job": job, "round": round, "task": task}
    for field, value in expected.items():
        if getattr(payload, field) != value:
            raise ReceiptError(
                f"the receipt names {field} {getattr(payload, field)!r}, not {value!r}"
            )
    return payload


def stated_job_epsilon(receipts: Iterable[tuple[str, float | None, str]]) -> float:
    """The epsilon a company's node states it spent in one job, from its receipts there as
    ``(task, epsilon, payload text)``: the largest running total they carry (version 2, the
    node's own accountant over its baseline and every round), else the sum of the training
    runs' epsilons (version 1 receipts; an upper bound of the composed total)."""
    totals: list[float] = []
    summed = 0.0
    for task, epsilon, payload in receipts:
        try:
            stated = json.loads(payload).get("epsilon_job")
        except (ValueError, AttributeError):
            stated = None
        if isinstance(stated, int | float):
            totals.append(float(stated))
        elif task == "train":
            summed += epsilon or 0.0
    return max(totals) if totals else summed
