"""Receipts and refusals, as the governed coordinator takes them.

Every accepted reply must carry a receipt signed by its company for exactly this job, round
and task, under this job's warrant, within the job's epsilon; a reply without one is refused.
A node's refusal comes back with the company's signed notice, which goes to the ledger as the
company's own statement (``sandbox.services.nodes.record_refusals``). Receipts are stored and
put in the ledger in one batch per exchange.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import TYPE_CHECKING

from flwr.app import RecordDict

from sandbox.errors import Invalid
from sandbox.governance import Governance
from sandbox.ledger import Actor, LedgerRecord, Privacy, Purpose, Resource
from sandbox.privacy.accounting import EPSILON_SLACK
from sandbox.protocol.jobspec import JobSpec
from sandbox.protocol.messages import RECEIPT
from sandbox.protocol.receipts import ReceiptError, ReceiptPayload, verify_receipt
from sandbox.protocol.warrant import Warrant
from sandbox.registry.models import Job, Receipt
from sandbox.services import nodes, runs

if TYPE_CHECKING:
    from coordinator.messaging import Exchange

COORDINATOR = Actor(principal="coordinator", role="coordinator")


def company_actor(company: str) -> Actor:
    return Actor(principal=company, role="company", organisation=company)


def check_against_warrant(payload: ReceiptPayload, warrant: Warrant | None, spec: JobSpec) -> None:
    """A receipt's binding to the job's warrant and its epsilon (``ReceiptError`` if not)."""
    if warrant is not None and payload.warrant != warrant.digest():
        raise ReceiptError(
            f"the receipt is under warrant {str(payload.warrant)[:16]}…, not the job's "
            f"{warrant.digest()[:16]}…"
        )
    dp = spec.privacy.dp
    if payload.epsilon_job is not None:
        if dp is None:
            raise ReceiptError("the receipt states a privacy spend in a job without DP")
        if payload.epsilon_job > dp.epsilon + EPSILON_SLACK:
            raise ReceiptError(
                f"the receipt's job total epsilon {payload.epsilon_job:.6g} is beyond the "
                f"job's {dp.epsilon:g}"
            )


class ReceiptKeeper:
    def __init__(self, gov: Governance, job: Job, spec: JobSpec):
        self.gov = gov
        self.job_id = job.id
        self.spec = spec
        self.warrant = Warrant.parse(job.warrant) if job.warrant is not None else None

    def verify(self, task: str, round_number: int, exchange: Exchange) -> None:
        """Refuse every taken reply without a valid receipt (a reply inside a secure
        aggregate is refused too, which fails that round: its update cannot be taken out)."""
        for company, content in exchange.contents().items():
            if company in exchange.receipts:
                continue
            try:
                exchange.receipts[company] = self._receipt(company, task, round_number, content)
            except ReceiptError as exc:
                exchange.reject(company, [f"receipt refused: {exc}"])

    def _receipt(
        self, company: str, task: str, round_number: int, content: RecordDict
    ) -> tuple[ReceiptPayload, str, str]:
        record = content.config_records.get(RECEIPT)
        if record is None:
            raise ReceiptError("the reply carries no signed receipt")
        text, signature = str(record["payload"]), str(record["signature"])
        public_key = runs.company_key(self.gov.engine, company)
        payload = verify_receipt(
            text,
            signature,
            public_key,
            company=company,
            job=self.job_id,
            round=round_number,
            task=task,
        )
        if payload.dataset != f"{company}/{self.spec.dataset}":
            raise ReceiptError(f"the receipt names dataset {payload.dataset}")
        check_against_warrant(payload, self.warrant, self.spec)
        return payload, text, signature

    def record_exchange(self, task: str, round_number: int, exchange: Exchange) -> None:
        """Store the exchange's receipts and put them, and the refusals the nodes signed, in
        the ledger, in one batch."""
        rows, records = [], []
        for company, (payload, text, signature) in sorted(exchange.receipts.items()):
            rows.append(
                Receipt(
                    job_id=self.job_id,
                    round=round_number,
                    company_id=company,
                    dataset_id=payload.dataset,
                    task=task,
                    rows=payload.rows,
                    epsilon=payload.epsilon,
                    delta=payload.delta,
                    payload=text,
                    signature=signature,
                )
            )
            records.append(self._receipt_record(task, round_number, payload, text))
        if rows:
            runs.store_receipts(self.gov.engine, rows)
        self.gov.record_many(records)
        for company, notice in sorted(exchange.notices.items()):
            # An unsigned claim of refusal is only the node's error, already noted as such.
            with contextlib.suppress(Invalid):
                nodes.record_refusals(self.gov, company, [notice], via="coordinator")

    def _receipt_record(
        self, task: str, round_number: int, payload: ReceiptPayload, text: str
    ) -> LedgerRecord:
        return LedgerRecord(
            action="receipt.recorded",
            actor=company_actor(payload.company),
            resource=Resource(
                kind="dataset",
                id=payload.dataset,
                owner=payload.company,
                content_hash=payload.dataset_hash if len(payload.dataset_hash) == 64 else None,
            ),
            purpose=Purpose(
                name=payload.purpose,
                legal_basis="consent",
                consent_id=payload.consent or "none",
            ),
            job_id=self.job_id,
            round=round_number,
            privacy=Privacy(epsilon_spent=payload.epsilon, delta=payload.delta)
            if payload.epsilon is not None
            else None,
            details={
                "task": task,
                "rows": payload.rows,
                "receipt_sha256": hashlib.sha256(text.encode()).hexdigest(),
                "node_log_index": payload.log_index,
                **(
                    {
                        "warrant_sha256": payload.warrant,
                        "epsilon_job": payload.epsilon_job,
                        "epsilon_purpose": payload.epsilon_purpose,
                        "epsilon_dataset": payload.epsilon_dataset,
                    }
                    if payload.warrant is not None
                    else {}
                ),
            },
        )
