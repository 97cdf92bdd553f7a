"""Privacy budgets: the pure rule, the spend in the registry (it survives restarts), the
write-ahead charge, the coordinator's check of what a company reports, and the selector."""

from __future__ import annotations

import pytest
from flwr.app import MetricRecord, RecordDict

from coordinator.privacy import JobPrivacy
from coordinator.selection import (
    NO_SCHEDULE,
    Selection,
    SelectionRequest,
    apply_selection,
    budget_selector,
)
from sandbox import identity
from sandbox.config import Settings
from sandbox.db import dispose_engines, get_engine, session_scope
from sandbox.privacy.accounting import SPARE_RUNS, PrivacyBudgetExceeded, plan_schedule
from sandbox.privacy.budget import BudgetFacts, budget_allows, epsilon_cap, epsilon_caps
from sandbox.protocol.jobspec import DifferentialPrivacySpec
from sandbox.protocol.messages import TrainingPlan
from sandbox.registry import companies as company_store
from sandbox.registry import privacy as ledger
from sandbox.registry.models import Company, Job
from tests.support.world import tiny_plan

PURPOSE = "income-prediction"


def test_budget_rule() -> None:
    assert budget_allows(7.0, 1.0, 8.0)[0]
    ok, why = budget_allows(8.0, 0.01, 8.0)
    assert not ok and "8.0100 would exceed cap 8" in why
    assert not budget_allows(7.5, 0.6, 8.0)[0]
    assert epsilon_cap("high") == 3.0 < epsilon_cap("medium") < epsilon_cap("low")
    assert epsilon_cap("unheard-of") == min(epsilon_caps().values())


def add_company(engine, company_id: str) -> None:  # type: ignore[no-untyped-def]
    key = identity.generate_key()
    company_store.add_company(
        engine,
        Company(
            id=company_id,
            name=company_id,
            industry="Construction",
            public_key=identity.public_b64(key),
        ),
    )


def add_job(engine, job_id: str, tier: str = "high") -> None:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        session.add(
            Job(
                id=job_id,
                purpose=PURPOSE,
                spec={},
                spec_hash="0" * 64,
                risk_tier=tier,
                filed_by="t",
            )
        )


def schedule(epsilon: float = 4.0, rounds: int = 5):  # type: ignore[no-untyped-def]
    return plan_schedule(DifferentialPrivacySpec(epsilon=epsilon), 300, 64, 1, rounds)


def test_spend_is_charged_settled_summed_and_survives_a_restart(
    sandbox_home: Settings, engine
) -> None:
    add_company(engine, "acme")
    add_job(engine, "job-a")
    add_job(engine, "job-b")
    plan = schedule()
    first = ledger.charge_run(engine, ledger.RunScope("acme", PURPOSE, "job-a", 1, plan, 8.0))
    assert first.status == "charged"
    assert first.epsilon == pytest.approx(plan.epsilon_after(1))
    ledger.settle_run(
        engine, first.id, plan.epsilon_after(1), plan.epsilon_after(1), plan.delta,
        plan.noise_multiplier, plan.sample_rate, plan.steps_per_round,
    )  # fmt: skip
    second = ledger.charge_run(engine, ledger.RunScope("acme", PURPOSE, "job-a", 2, plan, 8.0))
    assert second.epsilon_job == pytest.approx(plan.epsilon_after(2))
    ledger.annotate_run(engine, second.id, "no reply within the round timeout")
    ledger.charge_run(engine, ledger.RunScope("acme", PURPOSE, "job-b", 1, plan, 8.0))

    # The coordinator restarts: a new engine reads the same figures from the database.
    dispose_engines()
    fresh = get_engine(sandbox_home.database_url)
    spend = ledger.spent_for_purpose(fresh, "acme", PURPOSE)
    assert spend.jobs == 2
    assert spend.epsilon == pytest.approx(plan.epsilon_after(2) + plan.epsilon_after(1))
    assert spend.delta == pytest.approx(2 * plan.delta)
    assert ledger.spent_in_job(fresh, "acme", "job-a") == (pytest.approx(plan.epsilon_after(2)), 2)
    assert ledger.spent_for_purpose(fresh, "acme", "other-purpose").epsilon == 0.0
    rows = ledger.job_spends(fresh, "job-a")
    assert [r.status for r in rows] == ["reported", "charged"]
    assert rows[1].note == "no reply within the round timeout"


def test_a_charge_never_goes_down_when_a_company_reports_less(engine) -> None:
    add_company(engine, "acme")
    add_job(engine, "job-a")
    plan = schedule()
    row = ledger.charge_run(engine, ledger.RunScope("acme", PURPOSE, "job-a", 1, plan, 8.0))
    settled = ledger.settle_run(engine, row.id, 0.01, 0.01, plan.delta, 5.0, 0.1, 1)
    assert settled.epsilon_job == pytest.approx(plan.epsilon_after(1))
    assert settled.reported_epsilon_job == 0.01


def test_the_charge_refuses_a_company_at_its_cap(engine) -> None:
    add_company(engine, "acme")
    add_job(engine, "job-old")
    add_job(engine, "job-new")
    big = schedule(epsilon=8.0, rounds=1)
    # the baseline, the planned round and the spare run together spend the job's 8.0, the
    # purpose's cap
    ledger.charge_run(
        engine, ledger.RunScope("acme", PURPOSE, "job-old", 0, big, 8.0, baseline=True)
    )
    for number in (1, 1 + SPARE_RUNS):
        ledger.charge_run(engine, ledger.RunScope("acme", PURPOSE, "job-old", number, big, 8.0))
    with pytest.raises(
        PrivacyBudgetExceeded, match="privacy budget for purpose 'income-prediction'"
    ):
        ledger.charge_run(engine, ledger.RunScope("acme", PURPOSE, "job-new", 1, schedule(), 8.0))
    # Within the job's own epsilon: a run beyond the plan is refused too.
    add_job(engine, "job-short")
    add_company(engine, "other")
    short = schedule(epsilon=1.0, rounds=2)
    ledger.charge_run(
        engine, ledger.RunScope("other", PURPOSE, "job-short", 0, short, 8.0, baseline=True)
    )
    for number in range(1, 2 + SPARE_RUNS + 1):
        ledger.charge_run(
            engine, ledger.RunScope("other", PURPOSE, "job-short", number, short, 8.0)
        )
    with pytest.raises(PrivacyBudgetExceeded, match="privacy budget of job job-short"):
        ledger.charge_run(engine, ledger.RunScope("other", PURPOSE, "job-short", 3, short, 8.0))


def facts(company: str, spent: float, next_epsilon: float = 0.5) -> BudgetFacts:
    return BudgetFacts(
        company=company, purpose=PURPOSE, job_id="job-a", round=3, spent_purpose=spent,
        spent_job=1.0, runs_done=2, next_epsilon=next_epsilon, purpose_cap=8.0,
        job_epsilon=4.0, delta=1e-4,
    )  # fmt: skip


def test_budget_selector_excludes_a_company_at_its_cap_and_says_why() -> None:
    request = SelectionRequest(
        job_id="job-a",
        purpose=PURPOSE,
        risk_tier="high",
        round=3,
        candidates=("a", "b", "c"),
        dp=True,
        budgets={"a": facts("a", 2.0), "b": facts("b", 8.0)},
    )
    selection = budget_selector(request)
    assert selection.selected == ("a",)
    assert "privacy budget for purpose 'income-prediction'" in selection.sat_out["b"]
    assert "8.5000 would exceed cap 8" in selection.sat_out["b"]
    assert selection.sat_out["c"] == NO_SCHEDULE
    plain = SelectionRequest("job-a", PURPOSE, "low", 1, ("a", "b"), dp=False)
    assert budget_selector(plain).selected == ("a", "b")


def test_a_selector_cannot_add_companies_or_drop_them_without_a_reason() -> None:
    request = SelectionRequest("job-a", PURPOSE, "low", 1, ("a", "b", "c"), dp=False)
    held = apply_selection(request, Selection(selected=("a", "a", "zz"), sat_out={"b": "policy"}))
    assert held.selected == ("a",)
    assert held.sat_out == {"b": "policy", "c": "not selected for this round"}


def dp_plan(epsilon: float = 4.0, rounds: int = 5) -> TrainingPlan:
    return tiny_plan(dp=DifferentialPrivacySpec(epsilon=epsilon), rounds=rounds)


def report(plan, runs: int = 1, **changes: float) -> RecordDict:  # type: ignore[no-untyped-def]
    metrics = {
        "num-examples": 300.0,
        "loss": 0.5,
        "epsilon": plan.epsilon_after(runs) - plan.epsilon_after(runs - 1),
        "epsilon-job": plan.epsilon_after(runs),
        "delta": plan.delta,
        "noise-multiplier": plan.noise_multiplier,
        "sample-rate": plan.sample_rate,
        "steps": float(plan.steps_per_round),
    }
    metrics.update(changes)
    return RecordDict({"metrics": MetricRecord(metrics)})


def test_the_coordinator_refuses_reports_that_understate_the_cost(engine) -> None:
    add_company(engine, "acme")
    add_job(engine, "job-a")
    privacy = JobPrivacy(engine, "job-a", "low", dp_plan(rounds=10), {"acme": 300})
    plan = privacy.schedules["acme"]
    assert plan == schedule(rounds=10)

    def attempt(number: int, content: RecordDict | None) -> list[str]:
        charged, refused = privacy.charge(["acme"], number)
        assert charged == ["acme"] and not refused
        return privacy.settle("acme", content, why_missing="no reply")

    assert attempt(1, report(plan)) == []
    cases = {
        "noise multiplier": report(plan, 2, **{"noise-multiplier": plan.noise_multiplier / 2}),
        "sample rate": report(plan, 2, **{"sample-rate": 0.5}),
        "steps reported": report(plan, 2, steps=1.0),
        "delta": report(plan, 2, delta=0.009),
        "is less than": report(plan, 2, **{"epsilon-job": plan.epsilon_after(1)}),
        "must state": RecordDict({"metrics": MetricRecord({"num-examples": 300.0})}),
    }
    for number, (phrase, content) in enumerate(cases.items(), start=2):
        problems = attempt(number, content)
        assert any(phrase in p for p in problems), (phrase, problems)
    assert attempt(len(cases) + 2, None) == []
    rows = ledger.job_spends(engine, "job-a")
    assert [r.status for r in rows] == ["reported"] + ["charged"] * (len(cases) + 1)
    assert rows[-1].note == "no reply"
    assert all(r.note for r in rows[1:])
    summary = privacy.round_summary()
    assert summary["acme"]["status"] == "charged" and summary["acme"]["note"] == "no reply"


def test_charges_of_a_round_that_sends_nothing_are_withdrawn(engine) -> None:
    add_company(engine, "acme")
    add_job(engine, "job-a")
    privacy = JobPrivacy(engine, "job-a", "high", dp_plan(), {"acme": 300})
    privacy.charge(["acme"], 1)
    privacy.release()
    assert ledger.job_spends(engine, "job-a") == []
