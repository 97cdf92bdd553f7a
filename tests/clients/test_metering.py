"""Metering at the company's node: what a task cost, measured there and signed in its
receipt. The meter agrees with the process's own accounting (``getrusage``) and clock within
10% on a CPU-bound task; bytes are the message's own; through the gate, an honest task's
receipt (version 4) carries the metering, verifies with the company's key, and claims no more
CPU or wall time than the whole task took and exactly the bytes received."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from clients.metering import content_bytes, metered
from sandbox import identity
from sandbox.metering import cpu_seconds
from sandbox.node.home import NodeHome
from sandbox.protocol.messages import RECEIPT
from sandbox.protocol.receipts import verify_receipt
from tests.adversarial.test_malicious_coordinator import World, reads, send, world  # noqa: F401


def busy(seconds: float) -> float:
    """Burn ``seconds`` of this thread's CPU time (matrix products), however loaded the
    machine is."""
    matrix = np.random.default_rng(0).random((160, 160))
    end, total = time.thread_time() + seconds, 0.0
    while time.thread_time() < end:
        total += float((matrix @ matrix).sum())
    return total


def test_the_meter_agrees_with_the_process_accounting() -> None:
    cpu, wall = cpu_seconds(), time.perf_counter()
    with metered(RecordDict()) as meter:
        busy(0.5)
    outer_cpu, outer_wall = cpu_seconds() - cpu, time.perf_counter() - wall
    assert outer_cpu >= 0.5  # the workload did burn CPU
    assert abs(meter.cpu_seconds - outer_cpu) <= 0.1 * outer_cpu
    assert abs(meter.wall_seconds - outer_wall) <= 0.1 * outer_wall


def test_a_waiting_task_is_charged_the_cpu_spent_not_the_wall_time() -> None:
    """The task waits; the process's other threads (earlier tests leave some) may compute
    meanwhile, and that is what getrusage counts: the meter reads it, never the clock."""
    cpu, own = cpu_seconds(), time.thread_time()
    with metered(RecordDict()) as meter:
        time.sleep(0.3)
    outer_cpu = cpu_seconds() - cpu
    assert time.thread_time() - own < 0.05  # the task itself did not compute
    assert meter.wall_seconds >= 0.29
    assert meter.cpu_seconds <= outer_cpu + 1e-6


def test_bytes_are_the_messages_own() -> None:
    weights = np.zeros((10, 7), dtype=np.float32)
    content = RecordDict({
        "arrays": ArrayRecord({"w": Array(weights)}),
        "config": ConfigRecord({"task": "train"}),
        "metrics": MetricRecord({"num-examples": 5.0}),
    })  # fmt: skip
    size = content_bytes(content)
    array_bytes = len(Array(weights).data)
    assert array_bytes >= weights.nbytes
    assert size == (len("arrays") + len("w") + array_bytes + len("config") + len("task")
                    + len("train") + len("metrics") + len("num-examples") + len("5.0"))  # fmt: skip
    with metered(content) as meter:
        pass
    reading = meter.reading(RecordDict({"metrics": MetricRecord({"auc": 0.5})}))
    assert reading.bytes_in == size and reading.bytes_out == len("metrics") + len("auc") + 3


@pytest.mark.slow
def test_the_receipt_carries_the_metering_signed_by_the_company(
    world: World,  # noqa: F811
    reads: list[str],  # noqa: F811
) -> None:
    company = world.companies[0]
    task = world.honest.task
    sent = task.message(world.honest.weights())
    cpu, wall = cpu_seconds(), time.perf_counter()
    reply = send(world, company, task)
    outer_cpu, outer_wall = cpu_seconds() - cpu, time.perf_counter() - wall
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    record = reply.content.config_records[RECEIPT]
    public_key = identity.public_b64(NodeHome(world.settings.company_dir(company)).key())
    payload = verify_receipt(str(record["payload"]), str(record["signature"]), public_key,
                             company=company, job=world.job.id, round=task.round,
                             task=task.kind)  # fmt: skip
    assert payload.version == 4 and payload.metering is not None
    metering = payload.metering
    assert 0 < metering.cpu_seconds <= outer_cpu and 0 < metering.wall_seconds <= outer_wall
    assert metering.bytes_in == content_bytes(sent.content)
    assert metering.bytes_out > 0
    # Altered figures break the company's signature.
    bent = str(record["payload"]).replace(
        f'"cpu_seconds":{json.dumps(metering.cpu_seconds)}', '"cpu_seconds":0.000001'
    )
    assert bent != record["payload"]
    assert not identity.verify(public_key, bent.encode(), str(record["signature"]))


def test_a_version_3_receipt_cannot_carry_metering() -> None:
    from sandbox.protocol.receipts import Metering, ReceiptPayload

    fields: dict[str, Any] = {
        "company": "acme", "dataset": "acme/census", "dataset_hash": "c" * 64, "job": "job-1",
        "round": 1, "task": "train", "purpose": "p", "consent": None, "plan": "d" * 64,
        "rows": 10, "time": "2026-12-07T00:00:00Z", "log_index": 0, "log_hash": "e" * 64,
        "metering": Metering(cpu_seconds=1, wall_seconds=2, bytes_in=3, bytes_out=4),
    }  # fmt: skip
    assert '"metering"' in ReceiptPayload(**fields).canonical().decode()
    assert '"metering"' not in ReceiptPayload(**fields, version=3).canonical().decode()
