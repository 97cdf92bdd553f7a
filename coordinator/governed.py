"""The coordinator's governance: who may take part in each round, receipts, the ledger.

The runner calls this at fixed points. Before each exchange the policy decides, company by
company, ``participate_in_round`` from the registry as it is now (a consent revoked since the
last round removes its company; a spent privacy budget too). After each exchange, every
accepted reply must carry a receipt signed by its company for exactly this job, round and
task; a reply without one is refused. Receipts, rounds and the model's hash go to the ledger.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from flwr.app import Message
from sqlmodel import select

from policies.facts import RoundContext
from policies.rounds import select_participants
from sandbox.db import session_scope
from sandbox.governance import Annotation, Governance, job_world
from sandbox.jobspec import JobSpec
from sandbox.ledger import Actor, LedgerRecord, Privacy, Purpose, Resource
from sandbox.operations import check_runnable
from sandbox.protocol import RECEIPT, TrainingPlan
from sandbox.receipts import ReceiptError, ReceiptPayload, verify_receipt
from sandbox.registry import service
from sandbox.registry.models import Job, Receipt, Round

if TYPE_CHECKING:
    from coordinator.runner import Exchange

COORDINATOR = Actor(principal="coordinator", role="coordinator")


@dataclass
class Selection:
    selected: list[str]
    removed: dict[str, str] = field(default_factory=dict)
    stopped: bool = False
    reasons: tuple[str, ...] = ()


def epsilon_spent(gov: Governance, company: str, purpose: str) -> Decimal:
    """A company's privacy spend for ``purpose`` over all jobs: the sum of the epsilon its own
    signed receipts of training state."""
    with session_scope(gov.engine) as session:
        rows = session.exec(
            select(Receipt.epsilon)
            .join(Job, Job.id == Receipt.job_id)  # type: ignore[arg-type]
            .where(Receipt.company_id == company, Job.purpose == purpose, Receipt.task == "train")
        ).all()
    return sum((Decimal(str(e)) for e in rows if e is not None), Decimal(0))


class RoundGovernor:
    def __init__(self, gov: Governance, job: Job, spec: JobSpec):
        self.gov = gov
        self.job_id = job.id
        self.spec = spec
        self.engineer = job.filed_by

    # ----------------------------------------------------------------- admission
    def check_start(self) -> None:
        check_runnable(service.get_job(self.gov.engine, self.job_id))

    def next_epsilon(self, company: str, plan: TrainingPlan | None) -> Decimal:
        """What the next training round will cost ``company``: the job's budget spread evenly
        over its rounds (each company calibrates its noise to that)."""
        if plan is None or plan.dp is None:
            return Decimal(0)
        return Decimal(str(plan.dp.epsilon)) / Decimal(plan.rounds)

    def select(
        self, round_number: int, candidates: list[str], plan: TrainingPlan | None
    ) -> Selection:
        """Ask ``participate_in_round`` for every candidate, with the registry as it is now."""
        if not candidates:
            return Selection([], stopped=True, reasons=("no company node is available",))
        job = service.get_job(self.gov.engine, self.job_id)
        world = job_world(
            self.gov.engine,
            self.job_id,
            self.spec,
            self.engineer,
            job.approved_at is not None,
            candidates,
        )
        contexts = {}
        for company in candidates:
            contexts[company] = RoundContext(
                round=round_number,
                epsilon_spent=epsilon_spent(self.gov, company, self.spec.purpose),
                epsilon_next=self.next_epsilon(company, plan) if round_number > 0 else Decimal(0),
            )
        missing = [c for c in candidates if c not in world.companies]
        selection = self._decide(
            round_number, world, contexts, [c for c in candidates if c in world.companies]
        )
        for company in missing:
            selection.removed[company] = "the company is no longer in the registry"
        return selection

    def _decide(
        self, round_number: int, world: Any, contexts: dict[str, RoundContext], members: list[str]
    ) -> Selection:
        pdp = _AnnotatedPDP(
            self.gov,
            Annotation(
                job_id=self.job_id,
                round=round_number,
                purpose=self.spec.purpose,
                consent_id="per-participant",
            ),
        )
        result = select_participants(pdp, world.job, world.companies, contexts, world.entities)  # type: ignore[arg-type]
        removed = {c: " ".join(d.reasons) or "denied by policy" for c, d in result.removed.items()}
        return Selection(list(result.selected), removed, result.stopped, result.reasons)

    # ------------------------------------------------------------------ receipts
    def verify(self, task: str, round_number: int, exchange: Exchange) -> None:
        """Move every accepted reply without a valid receipt to the rejected ones."""
        for company, reply in list(exchange.accepted.items()):
            try:
                exchange.receipts[company] = self._receipt(company, task, round_number, reply)
            except ReceiptError as exc:
                del exchange.accepted[company]
                exchange.rejected[company] = f"receipt refused: {exc}"

    def _receipt(
        self, company: str, task: str, round_number: int, reply: Message
    ) -> tuple[ReceiptPayload, str, str]:
        record = reply.content.config_records.get(RECEIPT)
        if record is None:
            raise ReceiptError("the reply carries no signed receipt")
        text, signature = str(record["payload"]), str(record["signature"])
        public_key = service.get_company(self.gov.engine, company).public_key
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
        return payload, text, signature

    def record_exchange(self, task: str, round_number: int, exchange: Exchange) -> None:
        """Store the round's receipts and put them in the ledger, in one batch."""
        if not exchange.receipts:
            return
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
            records.append(
                LedgerRecord(
                    action="receipt.recorded",
                    actor=Actor(principal=company, role="company", organisation=company),
                    resource=Resource(
                        kind="dataset",
                        id=payload.dataset,
                        owner=company,
                        content_hash=payload.dataset_hash
                        if len(payload.dataset_hash) == 64
                        else None,
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
                    },
                )
            )
        with session_scope(self.gov.engine) as session:
            session.add_all(rows)
        self.gov.record_many(records)

    # -------------------------------------------------------------------- rounds
    def record_round(self, record: Round, plan: TrainingPlan | None) -> None:
        evaluation = record.metrics.get("evaluation") or {}
        details: dict[str, Any] = {
            "status": record.status,
            "asked": len(record.asked),
            "missing": [m["company"] for m in record.missing][:64],
            "rejected": [r["company"] for r in record.rejected][:64],
        }
        if evaluation.get("mean_auc") is not None:
            details["mean_auc"] = round(float(evaluation["mean_auc"]), 6)
        privacy = None
        if plan is not None and (plan.dp is not None or plan.secure_aggregation):
            privacy = Privacy(
                mechanism="dp-sgd" if plan.dp is not None else None,
                epsilon=plan.dp.epsilon if plan.dp is not None else None,
                secure_aggregation=plan.secure_aggregation,
            )
        self.gov.record(
            LedgerRecord(
                action="round.completed" if record.status == "completed" else "round.failed",
                actor=COORDINATOR,
                resource=Resource(kind="round", id=f"{self.job_id}/{record.number}"),
                job_id=self.job_id,
                round=record.number,
                participants=record.took_part or None,
                privacy=privacy,
                details=details,
            )
        )
        self.gov.ledger.checkpoint()

    def record_model(self, digest: str, rounds: int) -> None:
        self.gov.record(
            LedgerRecord(
                action="model.trained",
                actor=COORDINATOR,
                resource=Resource(kind="model", id=f"{self.job_id}/model"),
                job_id=self.job_id,
                model_hash=digest,
                details={"rounds": rounds},
            )
        )
        self.gov.ledger.checkpoint()

    def record_stop(self, reason_kind: str, round_number: int) -> None:
        self.gov.record(
            LedgerRecord(
                action="job.stopped",
                actor=COORDINATOR,
                resource=Resource(kind="job", id=self.job_id),
                job_id=self.job_id,
                round=round_number,
                details={"cause": reason_kind},
            )
        )


class _AnnotatedPDP:
    """The governance's decision point, with every decision annotated for the ledger."""

    def __init__(self, gov: Governance, annotation: Annotation):
        self.gov = gov
        self.annotation = annotation

    def decide(
        self, principal: Any, action: str, resource: Any, context: Any = None, entities: Any = ()
    ) -> Any:
        return self.gov.decide(
            principal, action, resource, context, entities, annotation=self.annotation
        )
