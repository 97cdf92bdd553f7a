"""The coordinator's governance (:class:`coordinator.governor.Governor`): who may take part
in each round, receipts, the ledger, the release decision.

The runner calls this at fixed points. Before each exchange the policy decides, company by
company, ``participate_in_round`` from the registry as it is now (a consent revoked since the
last round removes its company; a spent privacy budget too). After each exchange, every
accepted reply must carry a receipt signed by its company for exactly this job, round, task
and warrant (:mod:`coordinator.receipts`). Receipts, refusals, rounds and the model's hash go
to the ledger.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from coordinator.assessment import Assessment
from coordinator.receipts import COORDINATOR, ReceiptKeeper
from coordinator.release import (
    RegistryRecorder,
    ReleaseGate,
    ReleaseOutcome,
    ReleaseRecorder,
    ReleaseVerdict,
)
from coordinator.selection import NO_SCHEDULE, ParticipantSelector, Selection, SelectionRequest
from coordinator.witnesses import WitnessRelay
from policies.engine import Decision, MemoryRecorder, PolicyDecisionPoint
from policies.facts import EngineerFacts, ReleaseContext, RoundContext
from policies.policyset import LoadedPolicySet
from policies.rounds import select_participants
from policies.tiers import TierConfig
from sandbox.governance import Annotation, Governance, job_world
from sandbox.ledger import LedgerRecord, Privacy, Resource
from sandbox.privacy.budget import shipped_tiers
from sandbox.protocol.jobspec import JobSpec
from sandbox.protocol.messages import TrainingPlan
from sandbox.registry.models import Job, Round
from sandbox.services import releases, runs
from sandbox.vocabulary import JobStatus

if TYPE_CHECKING:
    from coordinator.messaging import Exchange


class RoundGovernor:
    def __init__(self, gov: Governance, job: Job, spec: JobSpec):
        self.gov = gov
        self.job_id = job.id
        self.spec = spec
        self.engineer = job.filed_by
        self.selector: ParticipantSelector = self.select
        self.release_gate: ReleaseGate = PolicyGate(gov.engine, job, spec, gov)
        self.release_recorder: ReleaseRecorder = Recorders(
            RegistryRecorder(gov.engine), LedgerReleaseRecorder(gov)
        )
        self.receipts = ReceiptKeeper(gov, job, spec)
        self.witnesses = WitnessRelay(gov)

    def tiers(self) -> TierConfig:
        return self.gov.tiers

    # ----------------------------------------------------------------- admission
    def check_start(self) -> None:
        """A governed run takes up only a job whose start was decided (and recorded)."""
        job = runs.job(self.gov.engine, self.job_id)
        if job.status != JobStatus.RUNNING:
            runs.check_runnable(job)
            raise PermissionError(
                f"job {self.job_id} was not started through the sandbox (it is {job.status}); "
                "start it with `sandbox job run`, the API or `sandbox federation run`"
            )

    def select(self, request: SelectionRequest) -> Selection:
        """The runner's participant selector under governance: ``participate_in_round`` for
        every candidate, from the registry as it is now (consents, approval, suspension)
        and, in a DP job, the company's privacy budget facts."""
        job = runs.job(self.gov.engine, self.job_id)
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
                sat_out[company] = NO_SCHEDULE
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
        self.receipts.verify(task, round_number, exchange)

    def record_exchange(self, task: str, round_number: int, exchange: Exchange) -> None:
        self.receipts.record_exchange(task, round_number, exchange)

    # ---------------------------------------------------------------- witnesses
    def witness_config(self) -> dict[str, str]:
        return self.witnesses.config()

    def collect_witnesses(self, exchange: Exchange) -> None:
        self.witnesses.collect(exchange)

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

    def record_stop(self, cause: str, round_number: int) -> None:
        self.gov.record(
            LedgerRecord(
                action="job.stopped",
                actor=COORDINATOR,
                resource=Resource(kind="job", id=self.job_id),
                job_id=self.job_id,
                round=round_number,
                details={"cause": cause},
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


# ------------------------------------------------------------------------ release
class PolicyGate:
    """The release decision is Cedar's ``release_model``: the job's engineer asks, the
    assessment's findings are the context, the tier's thresholds are the policy set's. The
    verdict's checks are the decision's own: each ``@check`` policy with its figure, limit
    and words, and every other policy that denied.

    Under governance the decision is the governance's (in the ledger); without it (runs of
    the learning engine alone) a decision point over the shipped policy set decides, with
    nothing recorded beyond the registry."""

    def __init__(self, engine: Any, job: Job, spec: JobSpec, gov: Governance | None = None):
        self.engine = engine
        self.job = job
        self.spec = spec
        self.gov = gov
        if gov is None:
            self._pdp = PolicyDecisionPoint(LoadedPolicySet.from_dir(), MemoryRecorder())

    def tiers(self) -> TierConfig:
        return self.gov.tiers if self.gov is not None else shipped_tiers()

    def decide(self, job_id: str, tier: str, assessment: Assessment) -> ReleaseVerdict:
        job = runs.job(self.engine, job_id)
        world = job_world(self.engine, job_id, self.spec, job.filed_by, job.approved_at is not None)
        args = (
            EngineerFacts(job.filed_by),
            "release_model",
            world.job,
            release_context(assessment),
            world.entities,
        )
        if self.gov is not None:
            decision = self.gov.decide(
                *args,
                annotation=Annotation(
                    job_id=job_id, purpose=self.spec.purpose, consent_id="per-participant"
                ),
            )
        else:
            decision = self._pdp.decide(*args)
        return release_verdict(decision, assessment, tier)


def release_context(assessment: Assessment, evidence_reviewed: bool = False) -> ReleaseContext:
    """The assessment's findings as the context of ``release_model`` (``evidence_reviewed``:
    a regulator reviewed the thin evidence and approved)."""
    return releases.release_context(assessment.to_json(), evidence_reviewed)


def release_verdict(decision: Decision, assessment: Assessment, tier: str) -> ReleaseVerdict:
    """The verdict of a ``release_model`` decision (:func:`sandbox.services.releases.release_verdict`)."""
    return releases.release_verdict(decision, assessment.to_json(), tier)


class LedgerReleaseRecorder:
    """The release in the ledger: the model's hash, whether it left the sandbox, and each
    company's contribution share (one record per company, so every share is provable)."""

    def __init__(self, gov: Governance):
        self.gov = gov

    def record(self, outcome: ReleaseOutcome) -> None:
        verdict = outcome.verdict
        assessment = outcome.assessment
        details: dict[str, Any] = {
            "allowed": verdict.allowed,
            "outcome": verdict.outcome,
            "tier": verdict.tier,
            "exported": outcome.exported_to is not None,
            "companies_not_assessed": len(assessment.not_assessed),
        }
        for name, value in (
            ("worst_company_gap", assessment.worst_company_gap),
            ("worst_company_gap_low", assessment.worst_company_gap_low),
            ("worst_company_gap_high", assessment.worst_company_gap_high),
            ("calibration_error", assessment.calibration_error),
            ("robustness_drop", assessment.worst_robustness_drop[1]),
        ):
            if value is not None:
                details[name] = round(float(value), 6)
        records = [
            LedgerRecord(
                action="model.released" if verdict.allowed else "model.withheld",
                actor=COORDINATOR,
                resource=Resource(kind="release", id=f"{outcome.job_id}/release"),
                job_id=outcome.job_id,
                model_hash=outcome.model_hash,
                details=details,
            )
        ]
        for company, figures in sorted(contribution_shares(outcome.contributions).items()):
            records.append(
                LedgerRecord(
                    action="contribution.share",
                    actor=COORDINATOR,
                    resource=Resource(kind="company", id=company, owner=company),
                    job_id=outcome.job_id,
                    model_hash=outcome.model_hash,
                    details=figures,
                )
            )
        self.gov.record_many(records)
        self.gov.ledger.checkpoint()


class Recorders:
    """Several recorders, in order: the registry's row, then the ledger's records."""

    def __init__(self, *recorders: ReleaseRecorder):
        self.recorders = recorders

    def record(self, outcome: ReleaseOutcome) -> None:
        for recorder in self.recorders:
            recorder.record(outcome)


def contribution_shares(contributions: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per company, its share, Shapley estimate, leave-one-out value and rounds, as numbers
    (an estimate that could not be made gives no shares)."""
    out: dict[str, dict[str, Any]] = {}
    for row in (contributions or {}).get("companies", []) or []:
        figures: dict[str, Any] = {"rounds": int(row.get("rounds", 0))}
        for key in ("share", "shapley", "leave_one_out"):
            value = row.get(key)
            if value is not None:
                figures[key] = round(float(value), 6)
        out[str(row["company"])] = figures
    return out
