"""Fault drills: a company's real ClientApp, wrapped so that a fraction of companies drop out
(an error) or time out (a late reply) in each training round.

Used by the reliability benchmark and its tests; nothing here is part of the product. Which
company fails in which round is a seeded function of (job, round, company), so a drill can
be repeated exactly.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import ray.cloudpickle
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from clients.app import make_client_app
from sandbox.node.home import NodeHome
from sandbox.protocol.messages import CONFIG

FaultMode = Literal["drop", "timeout", "mixed"]


def fails(job: str, round_number: int, company: str, fraction: float, seed: int) -> bool:
    """Whether ``company`` fails in this round of ``job`` (a seeded coin of bias ``fraction``)."""
    digest = hashlib.sha256(f"{seed}|{job}|{round_number}|{company}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def failure_kind(job: str, round_number: int, company: str, mode: FaultMode, seed: int) -> str:
    """``drop`` or ``timeout`` for a company that fails (``mixed``: a second seeded coin)."""
    if mode != "mixed":
        return mode
    return "drop" if fails(job, round_number, company, 0.5, seed + 1) else "timeout"


def faulty_client_app(
    node_dirs: Sequence[str],
    fraction: float,
    mode: FaultMode = "drop",
    seed: int = 0,
    delay_s: float = 0.0,
) -> ClientApp:
    """The companies' ClientApp where, in every training round, each company fails with
    probability ``fraction``: ``drop`` answers with an error (the node went away), ``timeout``
    answers ``delay_s`` seconds late (after the round's timeout, when that is shorter),
    ``mixed`` does one or the other (also a seeded choice)."""
    honest = make_client_app(node_dirs)
    companies = [NodeHome(Path(d)).company_id for d in node_dirs]
    app = ClientApp()

    @app.query()
    def query(message: Message, context: Context) -> Message:
        return honest(message, context)

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        return honest(message, context)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        company = companies[int(context.node_config["partition-id"])]
        config = message.content.config_records.get(CONFIG)
        if config is not None and fails(
            str(config["job-id"]), int(config["round"]), company, fraction, seed
        ):
            if (
                failure_kind(str(config["job-id"]), int(config["round"]), company, mode, seed)
                == "drop"
            ):
                raise RuntimeError(f"{company} dropped out of the round")
            time.sleep(delay_s)
        return honest(message, context)

    return app


# Ray ships the ClientApp to its workers; they cannot import this module by name.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
