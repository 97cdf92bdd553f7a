"""The start of a run: which node is which company (a signed challenge checked against the
registry), the encoding's statistics from the sums the companies send, and each company's
local-only baseline."""

from __future__ import annotations

import logging
import secrets
import time

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.app.typing import ConfigRecordValues

from coordinator.context import JobStopped, RunContext
from coordinator.persistence import JobState
from coordinator.rounds import select
from sandbox import identity
from sandbox.learning.encoding import ColumnMoments, FeatureSpec
from sandbox.protocol.messages import (
    CONFIG,
    IDENTITY,
    METRICS,
    STATS,
    TASK_BASELINE,
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
    """Encoding statistics from sums and counts, then every company's local baseline."""
    encoding = FeatureSpec.from_manifests(runs.manifests(ctx.engine, ctx.job), ctx.spec.features)
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
