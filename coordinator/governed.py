"""The coordinator's governance: who may take part in each round, receipts, the ledger.

The runner calls this at fixed points. Before each exchange the policy decides, company by
company, ``participate_in_round`` from the registry as it is now (a consent revoked since the
last round removes its company; a spent privacy budget too). After each exchange, every
accepted reply must carry a receipt signed by its company for exactly this job, round and
task; a reply without one is refused. Receipts, rounds and the model's hash go to the ledger.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from flwr.app import RecordDict

from coordinator.selection import Selection, SelectionRequest
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


class RoundGovernor:
    def __init__(self, gov: Governance, job: Job, spec: JobSpec):
        self.gov = gov
        self.job_id = job.id
        self.spec = spec
        self.engineer = job.filed_by

    # ----------------------------------------------------------------- admission
    def check_start(self) -> None:
        check_runnable(service.get_job(self.gov.engine, self.job_id))

    def selector(self, request: SelectionRequest) -> Selection:
        """The runner's participant selector under governance: ``participate_in_round`` for
        every candidate, from the registry as it is now (consents, approval, suspension)
        and, in a DP job, the company's privacy budget facts."""
        job = service.get_job(self.gov.engine, self.job_id)
        approved = job.approved_at is not None
        candidates = list(request.candidates)
        known = job_world(
            self.gov.engine, self.job_id, self.spec, self.engineer, approved, candidates
        )
        sat_out: dict[str, str] = {}
        contexts: dict[str, RoundContext] = {}
        for company in candidates:
            if company not in known.companies:
                sat_out[company] = "the company is no longer in the registry"
                continue
            facts = request.budgets.get(company)
            if request.dp and facts is None:
                sat_out[company] = "no privacy budget facts for this company"
                continue
            contexts[company] = RoundContext(
                round=request.round,
                epsilon_spent=Decimal(str(facts.spent_purpose)) if facts else Decimal(0),
                epsilon_next=Decimal(str(facts.next_epsilon)) if facts else Decimal(0),
            )
        members = [c for c in candidates if c in contexts]
        if not members:
            return Selection(selected=(), sat_out=sat_out)
        world = job_world(self.gov.engine, self.job_id, self.spec, self.engineer, approved, members)
        pdp = _AnnotatedPDP(
            self.gov,
            Annotation(
                job_id=self.job_id,
                round=request.round,
                purpose=self.spec.purpose,
                consent_id="per-participant",
            ),
        )
        result = select_participants(pdp, world.job, world.companies, contexts, world.entities)  # type: ignore[arg-type]
        for company, decision in result.removed.items():
            sat_out[company] = "removed by policy: " + (" ".join(decision.reasons) or "denied")
        return Selection(selected=tuple(result.selected), sat_out=sat_out)

    # ------------------------------------------------------------------ receipts
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
            "sat_out": [m["company"] for m in record.sat_out][:64],
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
