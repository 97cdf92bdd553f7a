"""The end of a run: the release assessment at each company, each company's contribution, the
release decision, the export (only when allowed) and the decision's record."""

from __future__ import annotations

from typing import Any

from coordinator.assessment import Assessment, build_assessment
from coordinator.context import RunContext
from coordinator.contribution import (
    ContributionUnavailable,
    Weights,
    estimate_contributions,
    volume_shares,
)
from coordinator.persistence import JobState
from coordinator.release import ReleaseOutcome, conclude_release
from coordinator.rounds import select
from sandbox.learning.explanation import standardised_coefficients
from sandbox.protocol.messages import METRICS, TASK_ASSESS, TASK_EVALUATE_MODELS, numbers
from sandbox.reports.model_card import privacy_summary
from sandbox.services import runs


def assess(ctx: RunContext, state: JobState, weights: Weights) -> Assessment:
    """Every participant scores the final model on its own test split, clean and perturbed;
    only metrics come back."""
    ctx.messenger.stage("release assessment at each company")
    config = {
        "plan": state.plan.model_dump_json(),
        "robustness": ctx.robustness.model_dump_json(),
    }
    asked, sat_out = select(ctx, ctx.spec.rounds + 1, state.plan)
    exchange = ctx.messenger.send(TASK_ASSESS, asked, config, weights)
    exchange.missing.update(sat_out)
    not_assessed = {**exchange.missing, **exchange.rejected}
    for company in ctx.spec.companies:
        if company not in ctx.messenger.nodes:
            not_assessed[company] = "its node did not prove its identity"
    return build_assessment(
        ctx.spec.companies,
        {c: numbers(r.content.metric_records[METRICS]) for c, r in exchange.accepted.items()},
        state.baselines,
        not_assessed,
        state.plan.encoding,
        ctx.robustness,
        coefficients=standardised_coefficients(weights, state.plan.encoding, state.plan.model.kind),
    )


def contributions(ctx: RunContext, state: JobState) -> dict[str, Any]:
    """Leave-one-out and Shapley estimates from the stored round updates; the coalition
    models are scored by the participants on their test splits (metrics only)."""
    ctx.messenger.stage("estimating each company's contribution")
    if state.plan.secure_aggregation:
        return volume_shares(
            {c: n for c, n in state.rows.items() if c in ctx.participants()},
            "the job used secure aggregation: the coordinator never saw a company's update, "
            "and comparing coalitions would reveal them, so the shares follow each "
            "company's training rows",
        ).to_json()
    companies, _ = select(ctx, ctx.spec.rounds + 1, state.plan)
    plan = state.plan.model_dump_json()

    def score(stacked: Weights, count: int) -> dict[str, dict[str, float]]:
        exchange = ctx.messenger.send(
            TASK_EVALUATE_MODELS, companies, {"plan": plan}, stacked, model_count=count
        )
        return {c: numbers(r.content.metric_records[METRICS]) for c, r in exchange.accepted.items()}

    try:
        report = estimate_contributions(ctx.updates.games(), score, ctx.contribution)
    except ContributionUnavailable as exc:
        return {"error": str(exc)}
    out = report.to_json()
    if ctx.spec.strategy.name not in ("fedavg", "fedprox"):
        out["notes"].append(
            f"the job aggregated with {ctx.spec.strategy.name}; coalition models are "
            "reconstructed with FedAvg's weighted mean"
        )
    return out


def release(
    ctx: RunContext, state: JobState, weights: Weights, digest: str, rounds_completed: int
) -> ReleaseOutcome:
    """Assess, estimate contributions, decide, export if allowed, record."""
    assessment = assess(ctx, state, weights)
    shares = contributions(ctx, state)
    tier = ctx.job.risk_tier
    ctx.messenger.stage(f"release decision ({tier} tier)")
    verdict = ctx.governor.release_gate.decide(ctx.job_id, tier, assessment)
    return conclude_release(
        job=ctx.job,
        spec=ctx.spec,
        plan=state.plan,
        datasets=runs.datasets(ctx.engine, ctx.job),
        run_dir=ctx.folder.path,
        model_hash=digest,
        rounds_completed=rounds_completed,
        assessment=assessment,
        verdict=verdict,
        contributions=shares,
        privacy=privacy_summary(ctx.spec, runs.receipts(ctx.engine, ctx.job_id)),
        recorder=ctx.governor.release_recorder,
    )
