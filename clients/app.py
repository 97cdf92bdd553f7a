"""The ClientApp a company runs. It answers the coordinator's tasks from the company's vault.

Where the node is: under the deployment engine the SuperNode's node config names it
(``company-id``, ``node-dir``); under the simulation engine, the federation that launched the
simulation passes the node folders in partition order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from clients import assess, work
from clients.gate import make_gate
from clients.secure import secure_aggregation_mod, secure_update_mod
from sandbox import identity
from sandbox.learning.robustness import RobustnessSettings
from sandbox.node.home import NodeHome
from sandbox.protocol.messages import (
    ARRAYS,
    CONFIG,
    IDENTITY,
    METRICS,
    STATS,
    TASK_ASSESS,
    TASK_BASELINE,
    TASK_EVALUATE_MODELS,
    TASK_IDENTIFY,
    TASK_STATS,
    TrainingPlan,
    from_array_record,
    identity_challenge,
    metric_record,
    number,
    to_array_record,
)

torch.set_num_threads(1)


class TaskRefused(RuntimeError):
    """The node will not carry out this task; the reason travels back as the reply's error."""


def resolve_node(context: Context, simulated: Sequence[str] | None) -> NodeHome:
    config = context.node_config
    if "node-dir" in config:
        node = NodeHome(Path(str(config["node-dir"])))
        expected = config.get("company-id")
        if expected is not None and node.company_id != expected:
            raise TaskRefused(f"node folder belongs to {node.company_id}, not {expected}")
        return node
    if simulated is not None and "partition-id" in config:
        return NodeHome(Path(simulated[int(config["partition-id"])]))
    raise TaskRefused("this node has no node-dir in its node config")


def task_config(message: Message) -> ConfigRecord:
    if CONFIG not in message.content.config_records:
        raise TaskRefused("the task carries no config record")
    return message.content.config_records[CONFIG]


def plan_of(config: ConfigRecord) -> TrainingPlan:
    return TrainingPlan.model_validate_json(str(config["plan"]))


def weights_of(message: Message) -> dict[str, np.ndarray]:
    if ARRAYS not in message.content.array_records:
        raise TaskRefused("the task carries no model arrays")
    return from_array_record(message.content.array_records[ARRAYS])


def make_client_app(simulated_nodes: Sequence[str] | None = None) -> ClientApp:
    """The company's ClientApp, its gate around every task that reads data;
    ``simulated_nodes`` maps partition ids to node folders in simulation."""
    nodes = list(simulated_nodes) if simulated_nodes is not None else None
    return build_client_app(nodes, make_gate(lambda context: resolve_node(context, nodes)))


def build_client_app(nodes: list[str] | None, gate: Mod) -> ClientApp:
    """The ClientApp's handlers around ``gate``. The handlers read no row without the
    mandate the gate makes active (:func:`clients.gate.active_mandate`)."""
    app = ClientApp()
    # The gate sits innermost, next to the task: it sees the plain task in every form of
    # round, decides before any data is read, and signs the receipt after.
    mods = [gate]

    @app.query(mods=mods)
    def query(message: Message, context: Context) -> Message:
        node = resolve_node(context, nodes)
        config = task_config(message)
        task = str(config["task"])
        if task == TASK_IDENTIFY:
            key = node.key()
            info = node.info()
            challenge = identity_challenge(str(config["job-id"]), str(config["nonce"]))
            record = ConfigRecord(
                {
                    "company-id": str(info["company_id"]),
                    "dataset-id": f"{info['company_id']}/{config['dataset']!s}",
                    "public-key": identity.public_b64(key),
                    "signature": identity.sign(key, challenge),
                }
            )
            return Message(RecordDict({IDENTITY: record}), reply_to=message)
        plan = plan_of(config)
        if task == TASK_STATS:
            stats = work.feature_statistics(node, plan)
            return Message(RecordDict({STATS: metric_record(stats)}), reply_to=message)
        if task == TASK_BASELINE:
            result, cost = work.local_baseline(node, plan)
            metrics = {**result.as_metrics(), **(cost.as_metrics() if cost else {})}
            return Message(RecordDict({METRICS: metric_record(metrics)}), reply_to=message)
        if task == TASK_ASSESS:
            settings = RobustnessSettings.model_validate_json(str(config["robustness"]))
            metrics = assess.assessment(node, plan, weights_of(message), settings)
            return Message(RecordDict({METRICS: metric_record(metrics)}), reply_to=message)
        if task == TASK_EVALUATE_MODELS:
            metrics = assess.evaluate_models(node, plan, weights_of(message))
            return Message(RecordDict({METRICS: metric_record(metrics)}), reply_to=message)
        raise TaskRefused(f"unknown task {task!r}")

    @app.train(mods=[secure_aggregation_mod, secure_update_mod, *mods])
    def train(message: Message, context: Context) -> Message:
        node = resolve_node(context, nodes)
        config = task_config(message)
        plan = plan_of(config)
        weights, stats, privacy = work.local_training(
            node, plan, weights_of(message), int(number(config, "round"))
        )
        metrics: dict[str, float] = {"num-examples": float(stats.num_examples)}
        if privacy is not None:
            metrics.update(privacy.as_metrics())  # the training loss stays here under DP
        else:
            metrics.update({"loss": stats.loss, "steps": float(stats.steps)})
        content = RecordDict(
            {
                ARRAYS: to_array_record(weights),
                METRICS: metric_record(metrics),
            }
        )
        return Message(content, reply_to=message)

    @app.evaluate(mods=mods)
    def evaluate(message: Message, context: Context) -> Message:
        node = resolve_node(context, nodes)
        plan = plan_of(task_config(message))
        result = work.local_evaluation(node, plan, weights_of(message))
        return Message(RecordDict({METRICS: metric_record(result.as_metrics())}), reply_to=message)

    return app


app = make_client_app()
