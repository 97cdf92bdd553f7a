"""One round through Flower's SecAgg+ (legacy stack) for the companies the coordinator chose.

Flower 1.42 has SecAgg+ only as a legacy workflow (``SecAggPlusWorkflow`` with a
``LegacyContext`` and a legacy ``Strategy``). Its ``__call__`` logs "Secure aggregation
halted." and returns normally when a stage fails, so the round would look like a success;
``CheckedSecAggPlusWorkflow`` runs the same four stages and says which one halted. The round
counts as completed only when every stage completed *and* an aggregate of the expected shape,
all finite, came out of it; the runner records anything else as a failed round.

What the companies mask is their update (trained model minus the global model; see
``clients.secure``), so the aggregate is the weighted mean update; the coordinator adds it to
the global model. Per company, only the metrics and receipt travel in clear.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, MetricRecord, RecordDict
from flwr.common import FitIns, Parameters, parameters_to_ndarrays
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.server_config import ServerConfig
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp import Grid

from coordinator.errors import node_error
from sandbox.protocol.messages import (
    METRICS,
    SECURE_ARRAY_KEYS,
    SECURE_CLIPPING_RANGE,
    TrainingPlan,
    to_array_record,
)

# 70 % of a company's shares reconstruct its mask if it drops out after masking.
RECONSTRUCTION_THRESHOLD = 0.7


def num_shares(companies: int) -> int:
    """How many companies hold shares of each company's keys: everyone in a small round, and
    O(log n) neighbours in a large one (SecAgg+'s point: cost n log n, not n squared). Odd,
    since an even count makes Flower 1.42's share-keys stage fail in every client."""
    if companies <= 11:
        return companies if companies % 2 else companies - 1
    return min(companies, 2 * math.ceil(math.log2(companies)) + 1)


DEFAULT_CLIPPING_RANGE = 8.0
QUANTIZATION_RANGE = 2**22
SGD_MOMENTUM = 0.9  # sandbox.learning.train's SGD
NOISE_MARGIN = 1.5


def clipping_range(plan: TrainingPlan, max_rows: int) -> float:
    """The range SecAgg+ quantizes update entries into; an entry outside it would be clipped
    silently, so each company refuses to send one (and says so).

    The job's norm bound, when it sets one, bounds every entry. A DP job bounds each step's
    gradient by the clipping norm C, so a round moves an entry by at most
    lr * C * sum over steps k of (1 - m^k) / (1 - m) with SGD momentum m (Adam: one lr per
    step), with a margin for the noise. Otherwise a fixed default."""
    if plan.max_update_norm is not None:
        return float(plan.max_update_norm)
    if plan.dp is None:
        return DEFAULT_CLIPPING_RANGE
    train = plan.train
    steps = train.epochs * max(1, math.ceil(max_rows / train.batch_size))
    if train.optimizer == "sgd":
        reach = sum((1 - SGD_MOMENTUM**k) / (1 - SGD_MOMENTUM) for k in range(1, steps + 1))
    else:
        reach = float(steps)
    return max(
        DEFAULT_CLIPPING_RANGE, train.learning_rate * plan.dp.max_grad_norm * reach * NOISE_MARGIN
    )


class _ChosenCompanies(Strategy):
    """A legacy Strategy that only serves as SecAgg+'s callback surface: it sends the task
    to the chosen nodes and keeps the aggregate ``aggregate_fit`` receives."""

    def __init__(self, node_ids: list[int], config: dict[str, Any]):
        self.node_ids = set(node_ids)
        self.config = config
        self.aggregate: Parameters | None = None

    def initialize_parameters(self, client_manager):  # type: ignore[no-untyped-def]
        return None

    def configure_fit(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
        return [
            (proxy, FitIns(parameters, dict(self.config)))
            for proxy in client_manager.all().values()
            if proxy.node_id in self.node_ids
        ]

    def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
        # Each FitRes's parameters were replaced by the unmasked aggregate.
        self.aggregate = results[0][1].parameters if results else None
        return self.aggregate, {}

    def configure_evaluate(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
        return []

    def aggregate_evaluate(self, server_round, results, failures):  # type: ignore[no-untyped-def]
        return None, {}

    def evaluate(self, server_round, parameters):  # type: ignore[no-untyped-def]
        return None


class CheckedSecAggPlusWorkflow(SecAggPlusWorkflow):
    """SecAggPlusWorkflow whose call says whether every stage completed, and which did not."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.state: WorkflowState | None = None
        self.halted_at: str | None = None

    def __call__(self, grid: Grid, context: Context) -> bool:  # type: ignore[override]
        if not isinstance(context, LegacyContext):
            raise TypeError("SecAgg+ needs a LegacyContext")
        self.state, self.halted_at = WorkflowState(), None
        for stage in (
            self.setup_stage,
            self.share_keys_stage,
            self.collect_masked_vectors_stage,
            self.unmask_stage,
        ):
            if not stage(grid, context, self.state):
                self.halted_at = stage.__name__
                return False
        return True


@dataclass
class SecureRound:
    """What a SecAgg+ round produced; ``completed`` only if every check passed."""

    completed: bool
    reason: str
    halted_at: str | None
    aggregate: dict[str, np.ndarray] | None
    replies: dict[int, RecordDict] = field(default_factory=dict)
    reply_problems: dict[int, str] = field(default_factory=dict)
    sampled: set[int] = field(default_factory=set)
    survivors: set[int] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "completed": self.completed,
            "reason": self.reason,
            "halted_at": self.halted_at,
            "sampled": len(self.sampled),
            "aggregated": len(self.replies),
            "failures": self.failures[:5],
            "seconds": round(self.seconds, 3),
        }


def unflatten_reply(flat: dict[str, Any]) -> RecordDict:
    """Rebuild a company's clear-text records from legacy FitRes metrics (``record.key``).

    Raises ValueError for anything that cannot be a record of the protocol; the runner then
    checks the result against the protocol's allow-list like any other reply."""
    grouped: dict[str, dict[str, Any]] = {}
    for name, value in flat.items():
        record, _, key = str(name).partition(".")
        if not key:
            raise ValueError(f"clear-text field {name!r} names no record")
        grouped.setdefault(record, {})[key] = value
    content = RecordDict()
    for record, values in grouped.items():
        if record == METRICS:
            content[record] = MetricRecord(values)
        else:
            content[record] = ConfigRecord(values)
    return content


def secure_round(
    grid: Grid,
    context: Context,
    node_ids: list[int],
    weights: dict[str, np.ndarray],
    config: dict[str, Any],
    server_round: int,
    *,
    max_weight: float,
    clipping_range: float,
    timeout: float | None,
) -> SecureRound:
    """Run SecAgg+ for ``node_ids`` from ``weights``; the aggregate is the new global model."""
    started = time.monotonic()
    round_context = Context(
        run_id=context.run_id,
        node_id=context.node_id,
        node_config=context.node_config,
        state=RecordDict(),
        run_config=context.run_config,
    )
    manager = SimpleClientManager()
    for node_id in node_ids:
        manager.register(GridClientProxy(node_id, grid, context.run_id))
    keys = list(weights)
    strategy = _ChosenCompanies(
        node_ids,
        {
            **config,
            SECURE_ARRAY_KEYS: ",".join(keys),
            SECURE_CLIPPING_RANGE: float(clipping_range),
        },
    )
    legacy = LegacyContext(
        round_context,
        config=ServerConfig(num_rounds=1),
        strategy=strategy,
        client_manager=manager,
    )
    legacy.state.array_records[MAIN_PARAMS_RECORD] = to_array_record(weights)
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
        {WorkflowKey.CURRENT_ROUND: server_round, WorkflowKey.START_TIME: time.time()}
    )
    workflow = CheckedSecAggPlusWorkflow(
        num_shares=num_shares(len(node_ids)),
        reconstruction_threshold=RECONSTRUCTION_THRESHOLD,
        max_weight=float(max_weight),
        clipping_range=float(clipping_range),
        quantization_range=QUANTIZATION_RANGE,
        timeout=timeout,
    )
    ok = workflow(grid, legacy)
    state = workflow.state or WorkflowState()
    result = SecureRound(
        completed=False,
        reason="",
        halted_at=workflow.halted_at,
        aggregate=None,
        sampled=set(state.sampled_node_ids),
        failures=[node_error(str(f)) for f in state.failures],
    )
    # The clear-text records of every company whose masked update arrived, also when a later
    # stage halted: those companies trained, and what that cost them must be settled.
    for proxy, fitres in state.legacy_results:
        try:
            result.replies[proxy.node_id] = unflatten_reply(dict(fitres.metrics))
        except (ValueError, TypeError) as exc:
            result.reply_problems[proxy.node_id] = f"clear-text records are malformed: {exc}"[:300]
    result.survivors = set(result.replies) | set(result.reply_problems)
    result.seconds = time.monotonic() - started
    if not ok:
        result.reason = f"secure aggregation halted at {workflow.halted_at}"
        return result
    if strategy.aggregate is None:
        result.reason = "secure aggregation completed its stages but produced no aggregate"
        return result
    arrays = parameters_to_ndarrays(strategy.aggregate)
    if len(arrays) != len(keys):
        result.reason = f"the aggregate holds {len(arrays)} arrays, expected {len(keys)}"
        return result
    delta = {}
    for name, value in zip(keys, arrays, strict=True):
        if tuple(value.shape) != tuple(weights[name].shape):
            result.reason = f"aggregate array {name!r} has shape {value.shape}"
            return result
        if not np.isfinite(value).all():
            result.reason = f"aggregate array {name!r} holds NaN or infinite values"
            return result
        delta[name] = value
    result.aggregate = {
        name: (weights[name].astype(np.float64) + delta[name]).astype(np.float32) for name in keys
    }
    result.completed, result.reason = True, "every stage completed"
    return result
