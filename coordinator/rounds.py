"""One round: select (through the selector hook, with each company's privacy budget as facts;
under governance the policy engine decides), charge the privacy the round will cost, send,
validate every reply against the protocol's allow-list and every update against the job's norm
bound, aggregate with the job's strategy (or through SecAgg+, when the job requires secure
aggregation), evaluate, and persist the round (record and model) before the next one starts.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
from flwr.app import Context, RecordDict

from coordinator.context import JobStopped, RunContext
from coordinator.messaging import Exchange
from coordinator.persistence import Weights, save_weights
from coordinator.secure import SecureRound, clipping_range, secure_round
from coordinator.selection import SelectionRequest, apply_selection
from sandbox.learning.metrics import mean_defined
from sandbox.protocol.messages import (
    ARRAYS,
    METRICS,
    TASK_EVALUATE,
    TASK_TRAIN,
    WARRANT,
    TrainingPlan,
    check_reply,
    check_update_norm,
    from_array_record,
    numbers,
)
from sandbox.registry.models import Round
from sandbox.services import runs
from sandbox.utc import utcnow


def select(ctx: RunContext, number: int, plan: TrainingPlan) -> tuple[list[str], dict[str, str]]:
    """The companies asked this round, and the ones that sit it out with the reason.

    The selector decides on the budget facts; the privacy of each selected company's run is
    then charged (write-ahead), and a company whose charge is refused sits out too. Round 0 is
    the set-up (statistics and baselines) and the round after the last is the release
    (assessment and contributions): they train nothing, so they spend no privacy budget, but
    under governance they are decided like any round.
    """
    candidates = tuple(ctx.participants())
    training = 0 < number <= ctx.spec.rounds and plan.dp is not None
    request = SelectionRequest(
        job_id=ctx.job_id,
        purpose=ctx.spec.purpose,
        risk_tier=ctx.job.risk_tier,
        round=number,
        candidates=candidates,
        dp=training,
        budgets=ctx.privacy.facts(candidates, number)
        if ctx.privacy is not None and training
        else {},
    )
    selection = apply_selection(request, ctx.governor.selector(request))
    asked, sat_out = list(selection.selected), dict(selection.sat_out)
    if ctx.privacy is not None and training:
        asked, refused = ctx.privacy.charge(asked, number)
        sat_out.update(refused)
    return asked, sat_out


def run_round(
    ctx: RunContext, number: int, plan: TrainingPlan, weights: Weights
) -> tuple[Weights, Round]:
    started = utcnow()
    if plan.dp is not None and ctx.privacy is None:
        raise RuntimeError("a DP job's round cannot run without its privacy bookkeeping")
    asked, sat_out = select(ctx, number, plan)
    if len(asked) < ctx.minimum:
        if ctx.privacy is not None:
            ctx.privacy.release()  # no task goes out, so nothing was spent
        store_round(ctx, number, "failed", [], Exchange(), {}, started, sat_out)
        detail = "; ".join(f"{c}: {r}" for c, r in sorted(sat_out.items()))
        raise JobStopped(
            f"round {number}: {len(asked)} companies may take part, fewer than the minimum "
            f"{ctx.minimum}" + (f" ({detail})" if detail else "")
        )
    config: dict[str, Any] = {"round": number, "plan": plan.model_dump_json()}
    if ctx.messenger.warrant is not None:
        config[WARRANT] = ctx.messenger.warrant
    metrics: dict[str, Any] = {}
    outcome: SecureRound | None = None
    if plan.secure_aggregation:
        exchange, outcome = _secure_exchange(ctx, number, asked, config, weights, plan)
        metrics["secure_aggregation"] = outcome.summary()
    else:
        shapes = {name: tuple(value.shape) for name, value in weights.items()}
        exchange = ctx.messenger.send(
            TASK_TRAIN, asked, config, weights, expected_arrays=shapes, round_number=number
        )
        _screen_updates(ctx, exchange, weights)
    if ctx.privacy is not None:
        metrics["privacy"] = ctx.privacy.round_summary()
    try:
        if outcome is not None:
            new_weights = _secure_aggregate(number, exchange, outcome)
        ctx.require(exchange.took_part, f"round {number}", exchange)
        if outcome is None:
            new_weights = _aggregate(ctx, number, exchange, metrics)
    except JobStopped:
        store_round(ctx, number, "failed", asked, exchange, metrics, started, sat_out)
        raise
    if outcome is None:
        # The accepted updates, kept for the contribution estimate (a secure round has none:
        # the coordinator only ever saw their sum).
        ctx.updates.save(
            number,
            weights,
            {
                c: from_array_record(r.content.array_records[ARRAYS])
                for c, r in exchange.accepted.items()
            },
            {
                c: numbers(r.content.metric_records[METRICS])["num-examples"]
                for c, r in exchange.accepted.items()
            },
        )
    if number % ctx.spec.evaluate_every == 0 or number == ctx.spec.rounds:
        metrics["evaluation"] = evaluate(ctx, plan, new_weights, exchange.took_part, number)
    # The round's model is on disk before the round counts as completed: a coordinator killed
    # in between resumes from the previous round and runs this one again.
    save_weights(ctx.folder.weights_path(number), new_weights)
    record = store_round(ctx, number, "completed", asked, exchange, metrics, started, sat_out)
    return new_weights, record


def _screen_updates(ctx: RunContext, exchange: Exchange, weights: Weights) -> None:
    """Settle each company's privacy charge from its reply and hold every accepted update to
    the job's norm bound; a reply that fails either is refused, with the reason."""
    bound = ctx.spec.privacy.max_update_norm
    for company, content in exchange.replies.items():
        problems = ctx.privacy.settle(company, content) if ctx.privacy is not None else []
        if company in exchange.accepted and bound is not None:
            update = from_array_record(content.array_records[ARRAYS])
            problems += check_update_norm(update, weights, bound)
        if problems:
            exchange.reject(company, problems)
    if ctx.privacy is not None:
        for company, reason in exchange.missing.items():
            ctx.privacy.settle(company, None, why_missing=reason)


def _aggregate(
    ctx: RunContext, number: int, exchange: Exchange, metrics: dict[str, Any]
) -> Weights:
    # Flower's median and trimmed-mean strategies empty the arrays of the replies they are
    # given; aggregate copies so that the accepted updates stay intact for the record.
    copies = [copy.deepcopy(reply) for reply in exchange.accepted.values()]
    aggregated, train_metrics = ctx.strategy.aggregate_train(number, copies)
    if aggregated is None:
        raise JobStopped(f"round {number}: the strategy produced no aggregate")
    metrics["train"] = dict(train_metrics or {})
    return {name: value.astype(np.float32) for name, value in from_array_record(aggregated).items()}


def _round_context(ctx: RunContext) -> Context:
    if ctx.flower_context is not None:
        return ctx.flower_context
    return Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={})


def _secure_exchange(
    ctx: RunContext,
    number: int,
    asked: list[str],
    config: dict[str, Any],
    weights: Weights,
    plan: TrainingPlan,
) -> tuple[Exchange, SecureRound]:
    """One round through SecAgg+: the coordinator gets the aggregate and, per company, only
    its clear-text metrics and receipt, which are checked like any reply."""
    by_node = {ctx.messenger.nodes[c]: c for c in asked}
    outcome = secure_round(
        ctx.messenger.grid,
        _round_context(ctx),
        list(by_node),
        weights,
        {"task": TASK_TRAIN, "job-id": ctx.job_id, **config},
        number,
        max_weight=float(max([ctx.rows.get(c, 0) for c in asked] + [1])),
        clipping_range=clipping_range(plan, max(ctx.rows.values(), default=1)),
        timeout=ctx.spec.round_timeout_s,
    )
    exchange = Exchange()
    for node_id, content in outcome.replies.items():
        company = by_node[node_id]
        ctx.messenger.observe(TASK_TRAIN, company, content)
        exchange.replies[company] = content
        problems = check_reply(TASK_TRAIN, content, masked=True)
        if ctx.privacy is not None:
            problems += ctx.privacy.settle(company, content)
        if problems:
            exchange.reject(company, problems)
        else:
            exchange.masked[company] = content
    for node_id, problem in outcome.reply_problems.items():
        exchange.reject(by_node[node_id], [problem])
    ctx.messenger.settle_receipts(TASK_TRAIN, number, exchange)
    for company in asked:
        if company not in exchange.masked and company not in exchange.rejected:
            exchange.missing[company] = (
                f"no masked update in the aggregate ({outcome.reason or 'dropped out'})"
            )
            if ctx.privacy is not None:
                ctx.privacy.settle(company, None, why_missing=exchange.missing[company])
    return exchange, outcome


def _secure_aggregate(number: int, exchange: Exchange, outcome: SecureRound) -> Weights:
    """The aggregate, only if SecAgg+ completed and every company in it was accepted: an
    update inside the sum cannot be taken out again, so a refused reply fails the round."""
    if not outcome.completed or outcome.aggregate is None:
        raise JobStopped(f"round {number}: {outcome.reason}; the round is not used")
    if exchange.rejected:
        names = ", ".join(sorted(exchange.rejected))
        raise JobStopped(
            f"round {number}: the secure aggregate includes updates of companies whose replies "
            f"were refused ({names}); the round is not used"
        )
    return outcome.aggregate


def evaluate(
    ctx: RunContext, plan: TrainingPlan, weights: Weights, companies: list[str], number: int
) -> dict[str, Any]:
    exchange = ctx.messenger.send(
        TASK_EVALUATE,
        companies,
        {"round": number, "plan": plan.model_dump_json(), **ctx.governor.witness_config()},
        weights,
        round_number=number,
    )
    ctx.governor.collect_witnesses(exchange)
    per_company = {
        c: numbers(r.content.metric_records[METRICS]) for c, r in exchange.accepted.items()
    }
    return {
        "companies": per_company,
        "mean_auc": mean_defined([m.get("auc") for m in per_company.values()]),
        "mean_balanced_accuracy": mean_defined(
            [m.get("balanced-accuracy") for m in per_company.values()]
        ),
    }


def store_round(
    ctx: RunContext,
    number: int,
    status: str,
    asked: list[str],
    exchange: Exchange,
    metrics: dict[str, Any],
    started: Any,
    sat_out: dict[str, str] | None = None,
) -> Round:
    record = Round(
        job_id=ctx.job_id,
        number=number,
        status=status,
        asked=asked,
        took_part=exchange.took_part,
        missing=[{"company": c, "reason": r} for c, r in sorted(exchange.missing.items())],
        rejected=[{"company": c, "reason": r} for c, r in sorted(exchange.rejected.items())],
        sat_out=[{"company": c, "reason": r} for c, r in sorted((sat_out or {}).items())],
        metrics=json.loads(json.dumps(metrics, default=float)),
        started_at=started,
        ended_at=utcnow(),
    )
    stored = runs.store_round(ctx.engine, record, completed=status == "completed")
    ctx.governor.record_round(stored, ctx.plan)
    return stored
