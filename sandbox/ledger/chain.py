"""Checkpoints as a chain. Each checkpoint this log signs carries two extension lines:

    time <POSIX seconds when it was signed>
    previous <size> <base64 SHA-256 of the previous checkpoint's note text>

(the note text is the checkpoint body without signature lines, so cosignatures added later
leave the hash alone). The first checkpoint names no predecessor. A verifier walks the
checkpoints by size and checks that each names the one before it: a checkpoint deleted from
the middle or the end of the chain is named, not silently skipped. Checkpoints signed before
the chain existed carry no extension lines and start the chain anew.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sandbox.ledger.checkpoint import Checkpoint

_TIME = re.compile(r"^time (0|[1-9][0-9]{0,18})$")
_PREVIOUS = re.compile(r"^previous (0|[1-9][0-9]{0,19}) ([A-Za-z0-9+/]{43}=)$")


def body_hash(checkpoint: Checkpoint) -> str:
    """Base64 SHA-256 of a checkpoint's note text."""
    return base64.b64encode(hashlib.sha256(checkpoint.body().encode("utf-8")).digest()).decode()


def chain_lines(previous: Checkpoint | None, signed_at: datetime) -> tuple[str, ...]:
    """The extension lines of the next checkpoint after ``previous``."""
    lines = [f"time {int(signed_at.timestamp())}"]
    if previous is not None:
        lines.append(f"previous {previous.size} {body_hash(previous)}")
    return tuple(lines)


@dataclass(frozen=True)
class Link:
    time: int | None
    previous_size: int | None
    previous_hash: str | None
    chained: bool
    """False for a checkpoint signed before the chain (no extension lines)."""


def link_of(checkpoint: Checkpoint) -> Link:
    time = previous_size = previous_hash = None
    for line in checkpoint.extensions:
        if found := _TIME.fullmatch(line):
            time = int(found.group(1))
        elif found := _PREVIOUS.fullmatch(line):
            previous_size, previous_hash = int(found.group(1)), found.group(2)
    return Link(time, previous_size, previous_hash, chained=bool(checkpoint.extensions))


def chain_problems(checkpoints: Sequence[Checkpoint]) -> list[tuple[int, str]]:
    """``(size, message)`` for every break in the chain of ``checkpoints`` (any order)."""
    problems: list[tuple[int, str]] = []
    ordered = sorted(checkpoints, key=lambda c: c.size)
    before: Checkpoint | None = None
    for checkpoint in ordered:
        link = link_of(checkpoint)
        if link.chained and link.previous_size is None and before is not None:
            problems.append(
                (checkpoint.size, f"checkpoint at size {checkpoint.size} starts a new chain "
                 f"although the checkpoint at size {before.size} precedes it")
            )  # fmt: skip
        elif link.previous_size is not None:
            if before is None or link.previous_size != before.size:
                held = "none" if before is None else f"size {before.size}"
                problems.append(
                    (checkpoint.size, f"the checkpoint at size {link.previous_size}, which the "
                     f"checkpoint at size {checkpoint.size} names as its predecessor, is "
                     f"missing (the one before it here: {held})")
                )  # fmt: skip
            elif link.previous_hash != body_hash(before):
                problems.append(
                    (checkpoint.size, f"the checkpoint at size {checkpoint.size} names another "
                     f"checkpoint at size {before.size} as its predecessor (split view)")
                )  # fmt: skip
        before = checkpoint
    return problems
