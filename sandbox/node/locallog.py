"""A company's own hash-chained log, kept at its node.

Each line is one JSON event with its index, its time, the hash of the line before and its own
hash: ``hash = SHA-256(prev || canonical JSON of {index, time, event})``. Changing, removing
or reordering a line breaks every hash after it; ``verify`` names the first bad line. The
company reads its log with ``sandbox company log``; the receipts it signs point into it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.canonical import canonical_json
from sandbox.utc import rfc3339, utcnow

GENESIS = "0" * 64


def _line_hash(prev: str, index: int, time: str, event: dict[str, Any]) -> str:
    body = canonical_json({"index": index, "time": time, "event": event})
    return hashlib.sha256(bytes.fromhex(prev) + body).hexdigest()


@dataclass(frozen=True)
class LogLine:
    index: int
    time: str
    prev: str
    hash: str
    event: dict[str, Any]


@dataclass(frozen=True)
class LogCheck:
    ok: bool
    lines: int
    first_bad: int | None = None
    problem: str | None = None
    head: str = GENESIS


class HashChainLog:
    def __init__(self, path: Path):
        self.path = path

    def _lines(self) -> Iterator[str]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield line

    def append(self, event: dict[str, Any]) -> LogLine:
        """Append ``event`` under an exclusive lock; returns the written line."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "r+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.seek(0)
                last = None
                for raw in handle:
                    if raw.strip():
                        last = raw
                if last is None:
                    index, prev = 0, GENESIS
                else:
                    tail = json.loads(last)
                    index, prev = int(tail["index"]) + 1, str(tail["hash"])
                time = rfc3339(utcnow(), micros=True)
                digest = _line_hash(prev, index, time, event)
                line = LogLine(index=index, time=time, prev=prev, hash=digest, event=event)
                handle.write(
                    json.dumps(
                        {
                            "index": index,
                            "time": time,
                            "prev": prev,
                            "hash": digest,
                            "event": event,
                        },
                        sort_keys=True,
                    )
                    + "\n"
                )
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return line

    def read(self) -> list[LogLine]:
        out = []
        for raw in self._lines():
            item = json.loads(raw)
            out.append(
                LogLine(item["index"], item["time"], item["prev"], item["hash"], item["event"])
            )
        return out

    def verify(self) -> LogCheck:
        prev = GENESIS
        count = 0
        for position, raw in enumerate(self._lines()):
            try:
                item = json.loads(raw)
                index, time, event = int(item["index"]), str(item["time"]), item["event"]
                recorded_prev, recorded_hash = str(item["prev"]), str(item["hash"])
            except (ValueError, KeyError, TypeError):
                return LogCheck(False, count, position, "the line is not a log entry")
            if index != position:
                return LogCheck(
                    False, count, position, f"index {index} where {position} was expected"
                )
            if recorded_prev != prev:
                return LogCheck(False, count, position, "it does not chain to the line before")
            if _line_hash(prev, index, time, event) != recorded_hash:
                return LogCheck(False, count, position, "its hash does not match its content")
            prev = recorded_hash
            count += 1
        return LogCheck(True, count, head=prev)
