"""A job's receipts as evidence: everything the companies signed for one job, checked
offline against the job's warrant with public keys only.

The document (``sandbox audit receipts JOB --out FILE``) holds the signed warrant, each
company's public key as the registry holds it (with its key id, which the ledger's
``company.joined`` entry records) and every receipt as signed. The check trusts none of it
beyond what the signatures prove: the warrant must carry the operator's signature (and the
approving regulator's where its rules ask for one), every receipt its company's signature,
and each receipt must name the warrant's hash, a dataset the warrant lists for that company,
the warrant's purpose, and node totals that never exceed the warrant's epsilon and never go
down from one receipt to the next of the same company.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sandbox import identity
from sandbox.protocol.receipts import ReceiptError, ReceiptPayload, verify_receipt
from sandbox.protocol.warrant import Warrant, WarrantError
from sandbox.vocabulary import Id, JobId, dataset_id

EVIDENCE_TYPE = "sandbox-job-receipts/v1"
EPSILON_SLACK = 1e-9
"""Float noise allowed when comparing an accountant's epsilon with the warrant's."""


class SignedReceipt(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    company: Id
    payload: str = Field(max_length=8000)
    signature: str = Field(max_length=200)


class CompanyKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    public_key: str = Field(max_length=64)
    key_id: str = Field(max_length=64)


class JobReceipts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = EVIDENCE_TYPE
    job: JobId
    warrant: str
    companies: dict[str, CompanyKey]
    receipts: tuple[SignedReceipt, ...]

    @classmethod
    def parse(cls, text: str) -> JobReceipts:
        try:
            document = cls.model_validate(json.loads(text))
        except (ValueError, ValidationError) as exc:
            raise ReceiptError(f"not a receipts document: {str(exc)[:300]}") from None
        if document.type != EVIDENCE_TYPE:
            raise ReceiptError(f"not a receipts document (type {document.type!r})")
        return document


@dataclass
class ReceiptsCheck:
    """What the check found: problems (none: the receipts hold) and what they state."""

    job: str
    receipts: int = 0
    problems: list[str] = field(default_factory=list)
    epsilon_job: dict[str, float] = field(default_factory=dict)
    """Each company's last stated epsilon for the job (DP jobs)."""
    key_ids: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_job_receipts(document: JobReceipts, operator: str, regulator: str) -> ReceiptsCheck:
    """Check every receipt of ``document`` against its warrant, with the operator's and the
    installation regulator's public keys (base64)."""
    result = ReceiptsCheck(job=document.job)
    try:
        warrant = Warrant.parse(document.warrant)
        warrant.check_signatures(operator, regulator)
        spec = warrant.job_spec()
    except WarrantError as exc:
        result.problems.append(str(exc))
        return result
    if warrant.job_id != document.job:
        result.problems.append(f"the warrant is job {warrant.job_id}'s, not {document.job}'s")
        return result
    cap = spec.privacy.dp.epsilon if spec.privacy.dp is not None else None
    digest = warrant.digest()
    stated: dict[str, list[ReceiptPayload]] = defaultdict(list)
    for number, signed in enumerate(document.receipts):
        where = f"receipt {number} ({signed.company})"
        key = document.companies.get(signed.company)
        if key is None:
            result.problems.append(f"{where}: no public key for {signed.company}")
            continue
        if identity.key_id(key.public_key) != key.key_id:
            result.problems.append(f"{where}: the key id does not match the company's key")
            continue
        try:
            claimed = ReceiptPayload.model_validate(json.loads(signed.payload))
            payload = verify_receipt(
                signed.payload,
                signed.signature,
                key.public_key,
                company=signed.company,
                job=document.job,
                round=claimed.round,
                task=claimed.task,
            )
        except (ValueError, ValidationError) as exc:
            result.problems.append(f"{where}: {str(exc)[:200]}")
            continue
        result.problems += [f"{where}: {p}" for p in _against_warrant(payload, warrant, digest)]
        if cap is not None and (payload.epsilon_job or 0.0) > cap + EPSILON_SLACK:
            result.problems.append(
                f"{where}: states epsilon {payload.epsilon_job} for the job, above the "
                f"warrant's {cap}"
            )
        stated[signed.company].append(payload)
        result.receipts += 1
    for company, payloads in stated.items():
        result.problems += _in_order(company, payloads)
        totals = [p.epsilon_job for p in payloads if p.epsilon_job is not None]
        if totals:
            result.epsilon_job[company] = max(totals)
        result.key_ids[company] = document.companies[company].key_id
    return result


def _against_warrant(payload: ReceiptPayload, warrant: Warrant, digest: str) -> list[str]:
    problems = []
    if payload.version < 2 or payload.warrant != digest:
        problems.append("it does not name this job's warrant")
    listed = warrant.dataset_of(payload.company)
    if listed is None:
        problems.append(f"the warrant lists no dataset of {payload.company}")
    elif payload.dataset != dataset_id(payload.company, warrant.job_spec().dataset):
        problems.append(f"it names dataset {payload.dataset!r}, not the warrant's")
    if payload.purpose != warrant.job_spec().purpose:
        problems.append(f"it names purpose {payload.purpose!r}, not the warrant's")
    return problems


def _in_order(company: str, payloads: list[ReceiptPayload]) -> list[str]:
    """The node's totals after each receipt never go down, in the order of its own log."""
    problems = []
    ordered = sorted(payloads, key=lambda p: p.log_index)
    seen: set[int] = set()
    last = {"job": 0.0, "purpose": 0.0, "dataset": 0.0}
    for payload in ordered:
        if payload.log_index in seen:
            problems.append(f"{company}: two receipts at log index {payload.log_index}")
        seen.add(payload.log_index)
        now = {
            "job": payload.epsilon_job,
            "purpose": payload.epsilon_purpose,
            "dataset": payload.epsilon_dataset,
        }
        for scope, value in now.items():
            if value is None:
                continue
            if value + EPSILON_SLACK < last[scope]:
                problems.append(
                    f"{company}: its {scope} epsilon goes down from {last[scope]} to {value} "
                    f"at log index {payload.log_index}"
                )
            last[scope] = max(last[scope], value)
    return problems


def receipts_document(
    warrant_text: str, companies: dict[str, str], receipts: list[tuple[str, str, str]]
) -> JobReceipts:
    """Build the document: the warrant, ``{company: public key}`` and ``(company, payload,
    signature)`` per receipt."""
    warrant = Warrant.parse(warrant_text)
    return JobReceipts(
        job=warrant.job_id,
        warrant=warrant_text,
        companies={
            c: CompanyKey(public_key=k, key_id=identity.key_id(k)) for c, k in companies.items()
        },
        receipts=tuple(SignedReceipt(company=c, payload=p, signature=s) for c, p, s in receipts),
    )
