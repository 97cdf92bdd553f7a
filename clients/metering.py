"""Metering at the company's node: what one task cost it, measured around the task's own
work (the gate's checks, its log and the receipt's signature aside).

CPU time is the node process's user and system time (``getrusage``; all its threads, since
PyTorch computes on several), wall time a monotonic clock; bytes are those of the task as
received and of the reply before its receipt (arrays by their serialised size, records by
their keys and values as text). The figures go into the task's signed receipt
(:class:`sandbox.protocol.receipts.Metering`). No GPU is used by the node's training here;
a node with one would add its time the same way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flwr.app import RecordDict

from sandbox.metering import cpu_seconds
from sandbox.protocol.receipts import Metering


def content_bytes(content: RecordDict) -> int:
    """The size of a message's content: arrays' serialised bytes, records' keys and values."""
    size = 0
    for name, arrays in content.array_records.items():
        size += len(name) + sum(len(key) + len(array.data) for key, array in arrays.items())
    for records in (content.config_records, content.metric_records):
        for name, record in records.items():
            size += len(name) + sum(len(str(k)) + len(str(v)) for k, v in record.items())
    return size


@dataclass
class Meter:
    bytes_in: int
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    def reading(self, reply: RecordDict) -> Metering:
        return Metering(
            cpu_seconds=round(self.cpu_seconds, 6),
            wall_seconds=round(self.wall_seconds, 6),
            bytes_in=self.bytes_in,
            bytes_out=content_bytes(reply),
        )


@contextmanager
def metered(content: RecordDict) -> Iterator[Meter]:
    """Measure the block's CPU and wall time; the meter is read once the block ends."""
    meter = Meter(bytes_in=content_bytes(content))
    cpu, wall = cpu_seconds(), time.perf_counter()
    try:
        yield meter
    finally:
        meter.cpu_seconds = max(0.0, cpu_seconds() - cpu)
        meter.wall_seconds = max(0.0, time.perf_counter() - wall)
