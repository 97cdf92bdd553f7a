"""The start of a run: which node is which company (a signed challenge checked against the
registry), the encoding's statistics from the sums the companies send, and each company's
local-only baseline."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.app.typing import ConfigRecordValues

from coordinator.context import JobStopped, RunContext
from coordinator.persistence import JobState
from coordinator.privacy import JobPrivacy
from coordinator.rounds import select
from sandbox import identity
from sandbox.data.manifest import DatasetManifest
from sandbox.learning.encoding import ColumnMoments, FeatureSpec
from sandbox.learning.models import build_model, get_weights
from sandbox.protocol.messages import (
    CONFIG,
    IDENTITY,
    METRICS,
    STATS,
    TASK_BASELINE,
    TASK_EVALUATE,
    TASK_IDENTIFY,
    TASK_STATS,
    check_reply,
    identity_challenge,
    number,
    numbers,
)
from sandbox.services import runs

log = logging.getLogger("sandbox.coordinator")

NODE_WAIT_S = 60.0


def identify(ctx: RunContext) -> None:
    """Map companies to node ids by a signed challenge checked against the registry."""
    messenger = ctx.messenger
    messenger.stage("identifying company nodes")
    wanted = set(ctx.spec.companies)
    deadline = time.monotonic() + NODE_WAIT_S
    node_ids: list[int] = []
    while time.monotonic() < deadline:
        node_ids = list(messenger.grid.get_node_ids())
        if len(node_ids) >= len(wanted):
            break
        time.sleep(1.0)
    if not node_ids:
        raise JobStopped("no company node is connected")
    nonce = secrets.token_hex(16)
    config: dict[str, ConfigRecordValues] = {
        "task": TASK_IDENTIFY,
        "job-id": ctx.job_id,
        "nonce": nonce,
        "dataset": ctx.spec.dataset,
    }
    messages = [
        Message(
            RecordDict({CONFIG: ConfigRecord(config)}),
            dst_node_id=node_id,
            message_type=MessageType.QUERY,
        )
        for node_id in node_ids
    ]
    # The first exchange also wakes the engine (the simulation's workers, a deployed node's
    # first app process): it gets at least the node wait, not just a round's time.
    replies = messenger.grid.send_and_receive(
        messages, timeout=max(ctx.spec.round_timeout_s, NODE_WAIT_S)
    )
    claimed: dict[str, list[int]] = {}
    challenge = identity_challenge(ctx.job_id, nonce)
    for reply in replies:
        if reply.has_error():
            continue
        messenger.observe(TASK_IDENTIFY, f"node-{reply.metadata.src_node_id}", reply.content)
        if check_reply(TASK_IDENTIFY, reply.content):
            continue
        claim = reply.content.config_records[IDENTITY]
        company_id = str(claim["company-id"])
        if company_id not in wanted:
            continue
        registered = runs.company_key(ctx.engine, company_id)
        if claim["public-key"] != registered:
            log.warning("node claiming %s presented a key not in the registry", company_id)
            continue
        if not identity.verify(registered, challenge, str(claim["signature"])):
            log.warning("node claiming %s failed the identity challenge", company_id)
            continue
        claimed.setdefault(company_id, []).append(reply.metadata.src_node_id)
    for company_id, ids in claimed.items():
        if len(ids) == 1:
            messenger.nodes[company_id] = ids[0]
        else:
            log.warning("%d nodes claim %s; none is used", len(ids), company_id)


def prepare(ctx: RunContext) -> JobState:
    """The encoding, the decision threshold and every company's local-only baseline: from
    the companies' exact sums in a job without differential privacy; under DP from public
    figures only (:func:`_prepare_private`)."""
    encoding = FeatureSpec.from_manifests(runs.manifests(ctx.engine, ctx.job), ctx.spec.features)
    if ctx.spec.privacy.dp is not None:
        return _prepare_private(ctx, encoding)
    ctx.messenger.stage("computing feature statistics from company sums")
    draft = ctx.base_plan(encoding)
    asked, sat_out = select(ctx, 0, draft)
    exchange = ctx.messenger.send(TASK_STATS, asked, {"plan": draft.model_dump_json()})
    exchange.missing.update(sat_out)
    ctx.require(exchange.accepted, "feature statistics", exchange)
    totals: dict[str, ColumnMoments] = {}
    rows = positives = 0.0
    per_company: dict[str, int] = {}
    for company, reply in exchange.accepted.items():
        stats = reply.content.metric_records[STATS]
        per_company[company] = int(number(stats, "rows"))
        rows += number(stats, "rows")
        positives += number(stats, "positives")
        for feature in encoding.numeric:
            moments = ColumnMoments(
                count=number(stats, f"count/{feature.name}"),
                total=number(stats, f"sum/{feature.name}"),
                total_sq=number(stats, f"sumsq/{feature.name}"),
            )
            totals[feature.name] = (
                totals[feature.name] + moments if feature.name in totals else moments
            )
    if rows <= 0:
        raise JobStopped("the participants hold no training rows")
    plan = ctx.base_plan(encoding.with_moments(totals), threshold=positives / rows)
    ctx.messenger.stage("training local-only baselines at each company")
    exchange = ctx.messenger.send(
        TASK_BASELINE, sorted(exchange.accepted), {"plan": plan.model_dump_json()}
    )
    baselines = {
        company: numbers(reply.content.metric_records[METRICS])
        for company, reply in exchange.accepted.items()
    }
    return JobState(plan=plan, baselines=baselines, rows=per_company)


def _prepare_private(ctx: RunContext, encoding: FeatureSpec) -> JobState:
    """Under differential privacy no exact statistic of any company's training rows is asked
    for: the numeric columns are scaled by the manifests' public bounds, the training-row
    counts are the ones the companies' registrations declared, and the decision threshold is
    the positive rate of the test splits (from scoring the initial model there). Each
    company's baseline is trained with DP-SGD under the job's noise and charged as round 0."""
    try:
        encoding = encoding.with_public_bounds()
    except ValueError as exc:
        raise JobStopped(str(exc)) from None
    declared = {
        d.company_id: int(DatasetManifest.model_validate(d.manifest).train_rows or 0)
        for d in runs.datasets(ctx.engine, ctx.job)
    }
    draft = ctx.base_plan(encoding)
    ctx.messenger.stage("scoring the initial model on each test split (its positive rate)")
    asked, sat_out = select(ctx, 0, draft)
    initial = initial_weights(ctx, encoding)
    exchange = ctx.messenger.send(
        TASK_EVALUATE, asked, {"round": 0, "plan": draft.model_dump_json()}, initial
    )
    exchange.missing.update(sat_out)
    ctx.require(exchange.accepted, "scoring the initial model", exchange)
    counts = [numbers(r.content.metric_records[METRICS]) for r in exchange.accepted.values()]
    tested = sum(c.get("num-examples", 0.0) for c in counts)
    threshold = sum(c.get("positives", 0.0) for c in counts) / tested if tested > 0 else 0.5
    plan = ctx.base_plan(encoding, threshold=threshold)
    ctx.privacy = JobPrivacy(
        ctx.engine,
        ctx.job_id,
        ctx.job.risk_tier,
        plan,
        declared,
        tiers=ctx.governor.tiers(),
    )
    ctx.messenger.stage("training local-only baselines at each company, under DP")
    charged, refused = ctx.privacy.charge(sorted(exchange.accepted), 0, baseline=True)
    baseline = ctx.messenger.send(
        TASK_BASELINE, charged, {"round": 0, "plan": plan.model_dump_json()}
    )
    baselines: dict[str, dict[str, float]] = {}
    for company in charged:
        reply = baseline.accepted.get(company)
        problems = ctx.privacy.settle(
            company,
            reply.content if reply is not None else None,
            baseline.missing.get(company, ""),
        )
        if reply is not None and not problems:
            baselines[company] = numbers(reply.content.metric_records[METRICS])
    for company, why in refused.items():
        log.warning("job %s: no baseline at %s: %s", ctx.job_id, company, why)
    return JobState(plan=plan, baselines=baselines, rows=declared)


def initial_weights(ctx: RunContext, encoding: FeatureSpec) -> dict[str, Any]:
    """The job's initial model (the same the rounds start from)."""
    return get_weights(
        build_model(ctx.spec.model.kind, encoding.input_dim, ctx.spec.model.hidden, ctx.spec.seed)
    )
