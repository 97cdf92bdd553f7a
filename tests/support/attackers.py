"""Test-only ClientApps: a company's real ClientApp, wrapped so that chosen companies
misbehave in chosen jobs. Nothing here is part of the product; the product's own app runs
inside, unchanged, and the attack is applied to its reply on the way out."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import ray.cloudpickle
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from clients.app import make_client_app
from sandbox.node.home import NodeHome
from sandbox.protocol.messages import ARRAYS, CONFIG, from_array_record, to_array_record

Weights = dict[str, np.ndarray]


def nan_update(trained: Weights, start: Weights) -> Weights:
    out = {k: v.copy() for k, v in trained.items()}
    first = sorted(out)[0]
    out[first].flat[0] = np.nan
    return out


def wrong_shape(trained: Weights, start: Weights) -> Weights:
    out = dict(trained)
    weight = next(k for k in out if out[k].ndim == 2)
    out[weight] = np.zeros((out[weight].shape[0], out[weight].shape[1] + 1), np.float32)
    return out


def oversized(trained: Weights, start: Weights) -> Weights:
    return {k: (start[k] + 1000.0 * (trained[k] - start[k])).astype(np.float32) for k in trained}


def sign_flip_x10(trained: Weights, start: Weights) -> Weights:
    return {k: (start[k] - 10.0 * (trained[k] - start[k])).astype(np.float32) for k in trained}


ATTACKS: dict[str, Callable[[Weights, Weights], Weights]] = {
    "nan": nan_update,
    "wrong-shape": wrong_shape,
    "oversized": oversized,
    "sign-flip-x10": sign_flip_x10,
}


def _job_of(message: Message) -> str:
    records = message.content.config_records
    if CONFIG in records:
        return str(records[CONFIG]["job-id"])
    if "fitins.config" in records:
        return str(records["fitins.config"]["job-id"])
    return ""


def attacking_client_app(
    node_dirs: Sequence[str],
    attacks: Mapping[tuple[str, str], str] | None = None,
    dropouts: Mapping[str, set[str]] | None = None,
    honest_app: Callable[[Sequence[str]], ClientApp] = make_client_app,
) -> ClientApp:
    """``attacks``: (job id, company) -> attack name applied to its train replies;
    ``dropouts``: job id -> companies that fail when SecAgg+ collects masked updates.
    ``honest_app`` is the app the misbehaving companies wrap (the bare arm's for bare jobs)."""
    honest = honest_app(node_dirs)
    companies = [NodeHome(Path(d)).company_id for d in node_dirs]
    attacks = dict(attacks or {})
    dropouts = {job: set(c) for job, c in (dropouts or {}).items()}
    app = ClientApp()

    def company_of(context: Context) -> str:
        return companies[int(context.node_config["partition-id"])]

    @app.query()
    def query(message: Message, context: Context) -> Message:
        return honest(message, context)

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        return honest(message, context)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        company = company_of(context)
        secure = message.content.config_records.get(RECORD_KEY_CONFIGS)
        collecting = secure is not None and secure.get(Key.STAGE) == Stage.COLLECT_MASKED_VECTORS
        if collecting and company in dropouts.get(_job_of(message), set()):
            raise RuntimeError(f"{company} lost its connection during secure aggregation")
        if secure is not None:
            return honest(message, context)
        job = _job_of(message)
        start = from_array_record(message.content.array_records[ARRAYS])
        reply = honest(message, context)
        name = attacks.get((job, company))
        if name is None or reply.has_error():
            return reply
        trained = from_array_record(reply.content.array_records[ARRAYS])
        reply.content[ARRAYS] = to_array_record(ATTACKS[name](trained, start))
        return reply

    return app


# Ray ships the ClientApp to its workers; they cannot import this test module by name.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
