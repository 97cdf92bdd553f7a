"""The coordinator's side of a DP job: each company's schedule, its budget facts before a
round, the write-ahead charge before its task is sent, and the settlement of its reply.

The coordinator computes every company's schedule with the same function the company uses
(from the filed spec and the training rows the company's dataset registration declared), so it
can predict what the next run costs before asking, and check what a company reports: a reply
that claims less noise, a higher sampling rate, other steps, a larger delta or less epsilon
than its runs add up to is refused, and the charge stays. The company's node keeps the
account that counts (``clients.accountant``); these figures mirror it, and each receipt
states the node's own totals beside them. Round 0 is the company's local-only baseline,
trained under the same noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from flwr.app import MetricRecord, RecordDict
from sqlalchemy.engine import Engine

from policies.tiers import TierConfig
from sandbox.privacy.accounting import (
    EPSILON_SLACK,
    DpSchedule,
    PrivacyBudgetExceeded,
    Run,
    composed_epsilon,
    plan_schedule,
)
from sandbox.privacy.budget import BudgetFacts, epsilon_cap
from sandbox.protocol.messages import DP_METRICS, METRICS, TrainingPlan, number
from sandbox.services import runs as ledger

RELATIVE_TOLERANCE = 1e-6


class JobPrivacy:
    def __init__(
        self,
        engine: Engine,
        job_id: str,
        risk_tier: str,
        plan: TrainingPlan,
        rows: Mapping[str, int],
        tiers: TierConfig | None = None,
    ):
        if plan.dp is None:
            raise ValueError("the job asks for no differential privacy")
        self.engine = engine
        self.job_id = job_id
        self.purpose = plan.purpose
        self.cap = epsilon_cap(risk_tier, tiers)
        self.schedules: dict[str, DpSchedule] = {
            company: plan_schedule(
                plan.dp, n, plan.train.batch_size, plan.train.epochs, plan.rounds
            )
            for company, n in rows.items()
            if n > 0
        }
        self.charges: dict[str, int] = {}
        self.baseline = False

    def _scope(self, company: str, round_number: int, baseline: bool = False) -> ledger.RunScope:
        return ledger.RunScope(
            company,
            self.purpose,
            self.job_id,
            round_number,
            self.schedules[company],
            self.cap,
            baseline=baseline,
        )

    def facts(self, companies: Iterable[str], round_number: int) -> dict[str, BudgetFacts]:
        """Budget facts of each company that has a schedule (a company without rows has none),
        for a round's training run (never the baseline's, whatever was charged last)."""
        return {
            company: ledger.budget_facts(self.engine, self._scope(company, round_number))
            for company in companies
            if company in self.schedules
        }

    def charge(
        self, companies: Iterable[str], round_number: int, baseline: bool = False
    ) -> tuple[list[str], dict[str, str]]:
        """Charge each company's next run (its baseline with ``baseline``) before its task
        goes out; returns the charged companies and, for the rest, why the charge was
        refused."""
        self.charges = {}
        self.baseline = baseline
        charged: list[str] = []
        refused: dict[str, str] = {}
        for company in companies:
            try:
                row = ledger.charge_run(self.engine, self._scope(company, round_number, baseline))
            except PrivacyBudgetExceeded as exc:
                refused[company] = str(exc)
                continue
            assert row.id is not None
            self.charges[company] = row.id
            charged.append(company)
        return charged, refused

    def release(self) -> None:
        """Withdraw this round's charges: only when no task of the round was sent."""
        for spend_id in self.charges.values():
            ledger.release_run(self.engine, spend_id)
        self.charges = {}

    def check_report(self, company: str, metrics: Mapping[str, Any]) -> list[str]:
        """Problems with what ``company`` reports for this run (empty: consistent)."""
        schedule = self.schedules[company]
        missing = [k for k in DP_METRICS if k not in metrics]
        if missing:
            return [f"a DP job's train reply must state {', '.join(missing)}"]
        values = {k: float(metrics[k]) for k in DP_METRICS}
        if not all(math.isfinite(v) and v >= 0 for v in values.values()):
            return ["the reply's privacy figures must be finite and non-negative"]
        problems = []
        sigma, rate = values["noise-multiplier"], values["sample-rate"]
        if sigma < schedule.noise_multiplier * (1 - RELATIVE_TOLERANCE):
            problems.append(
                f"noise multiplier {sigma:.6g} is below the job's {schedule.noise_multiplier:.6g}"
            )
        if rate > schedule.sample_rate * (1 + RELATIVE_TOLERANCE):
            problems.append(
                f"sample rate {rate:.6g} exceeds the planned {schedule.sample_rate:.6g}"
            )
        planned = schedule.baseline_steps if self.baseline else schedule.steps_per_round
        if int(values["steps"]) != planned:
            problems.append(f"{int(values['steps'])} steps reported, {planned} planned")
        if values["delta"] > schedule.delta * (1 + RELATIVE_TOLERANCE):
            problems.append(
                f"delta {values['delta']:.3g} exceeds the company's {schedule.delta:.3g}"
            )
        reported = [
            Run(r.noise_multiplier, r.sample_rate, r.steps)
            for r in ledger.job_spends(self.engine, self.job_id)
            if r.company_id == company
            and r.status == "reported"
            and r.id != self.charges.get(company)
        ]
        floor = composed_epsilon(
            [*reported, Run(sigma, rate, int(values["steps"]))], schedule.delta
        )
        if values["epsilon-job"] < floor * (1 - RELATIVE_TOLERANCE):
            problems.append(
                f"epsilon-job {values['epsilon-job']:.6g} is less than the {floor:.6g} "
                "its runs add up to"
            )
        if values["epsilon-job"] > schedule.target_epsilon + EPSILON_SLACK:
            problems.append(
                f"epsilon-job {values['epsilon-job']:.6g} exceeds the job's "
                f"{schedule.target_epsilon:g}"
            )
        if values["epsilon"] > values["epsilon-job"] + EPSILON_SLACK:
            problems.append("the run's epsilon exceeds the job total it reports")
        return problems

    def settle(self, company: str, content: RecordDict | None, why_missing: str = "") -> list[str]:
        """Settle ``company``'s charge from its reply; returns problems that make the reply
        unusable. Without a usable report the charge stays, annotated."""
        spend_id = self.charges.get(company)
        if spend_id is None:
            return ["no privacy charge was made for this company in this round"]
        record = content.metric_records.get(METRICS) if content is not None else None
        if not isinstance(record, MetricRecord):
            ledger.annotate_run(
                self.engine, spend_id, why_missing or "no usable metrics in the reply"
            )
            return ["the reply carries no metrics"] if content is not None else []
        metrics = dict(record)
        problems = self.check_report(company, metrics)
        if problems:
            ledger.annotate_run(self.engine, spend_id, "; ".join(problems))
            return problems
        ledger.settle_run(
            self.engine,
            spend_id,
            epsilon=number(metrics, "epsilon"),
            epsilon_job=number(metrics, "epsilon-job"),
            delta=number(metrics, "delta"),
            noise_multiplier=number(metrics, "noise-multiplier"),
            sample_rate=number(metrics, "sample-rate"),
            steps=int(number(metrics, "steps")),
        )
        return []

    def round_summary(self) -> dict[str, dict[str, Any]]:
        """This round's charges per company, as stored (for the round record and the ledger)."""
        rows = {r.id: r for r in ledger.job_spends(self.engine, self.job_id)}
        out = {}
        for company, spend_id in sorted(self.charges.items()):
            row = rows[spend_id]
            out[company] = {
                "epsilon": row.epsilon,
                "epsilon_job": row.epsilon_job,
                "delta": row.delta,
                "noise_multiplier": row.noise_multiplier,
                "status": row.status,
                **({"note": row.note} if row.note else {}),
            }
        return out
