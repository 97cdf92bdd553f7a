"""Pinning: a reader keeps the signed checkpoints it has seen and checks each new one against
them, so that a log showing it a rolled-back or rewritten history is caught the next time it
looks, whoever signed it.

A pin file is JSON: ``{"origin", "public_key", "notes": [signed notes, oldest first]}``. A
new checkpoint is accepted when its signature holds and, for every pinned note, it is the
same tree (same size, same root) or a provably consistent extension (an RFC 6962
consistency proof from the pinned size, fetched from the log and checked here). Anything
else is an alarm: both signed notes are kept as evidence beside the pin file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.files import write_atomic
from sandbox.ledger.checkpoint import Checkpoint, verify_checkpoint
from sandbox.ledger.errors import CheckpointError, LedgerError
from sandbox.ledger.merkle import verify_consistency
from sandbox.utc import utcnow

ProofSource = Callable[[int, int], Sequence[bytes]]
"""``proof(old_size, new_size)``: the log's consistency proof hashes between two sizes."""


class PinError(LedgerError, ValueError):
    """A pin file that cannot be read or belongs to another log."""


@dataclass
class PinCheck:
    checkpoint: Checkpoint | None
    problems: list[str] = field(default_factory=list)
    pinned: int = 0
    evidence: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def read_pins(path: Path, origin: str, public_key: str) -> list[str]:
    """The notes pinned in ``path`` (none when it does not exist yet)."""
    if not path.exists():
        return []
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        notes = [str(n) for n in document["notes"]]
        pinned_origin, pinned_key = document["origin"], document["public_key"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PinError(f"the pin file {path} cannot be read: {exc}") from None
    if (pinned_origin, pinned_key) != (origin, public_key):
        raise PinError(f"the pin file {path} pins another log ({pinned_origin}) or key")
    return notes


def check_new_checkpoint(
    note: str, pins: Sequence[str], public_key: str, origin: str, proof: ProofSource
) -> PinCheck:
    """Check the log's new signed ``note`` against every pinned note."""
    try:
        new = verify_checkpoint(note, public_key, origin=origin)
    except CheckpointError as exc:
        return PinCheck(None, [f"the log's checkpoint does not verify: {exc}"])
    result = PinCheck(new, pinned=len(pins))
    for held in pins:
        try:
            old = verify_checkpoint(held, public_key, origin=origin)
        except CheckpointError as exc:
            result.problems.append(f"a pinned note does not verify: {exc}")
            continue
        if old.size > new.size:
            result.problems.append(
                f"the log shows size {new.size}, smaller than the size {old.size} pinned: "
                "it was rolled back"
            )
        elif old.size == new.size and old.root != new.root:
            result.problems.append(f"the log signed two roots at size {new.size}: a split view")
        elif 0 < old.size < new.size:
            try:
                hashes = list(proof(old.size, new.size))
            except (LedgerError, ValueError, OSError) as exc:
                result.problems.append(
                    f"the log gives no consistency proof from size {old.size}: {exc}"
                )
                continue
            if not verify_consistency(old.size, new.size, old.root, new.root, hashes):
                result.problems.append(
                    f"size {new.size} is not consistent with the pinned size {old.size}: "
                    "the history under it was rewritten"
                )
    return result


def record(path: Path, origin: str, public_key: str, pins: list[str], note: str,
           check: PinCheck) -> None:  # fmt: skip
    """After a check: pin ``note`` when it held, else keep both sides as evidence."""
    if check.ok:
        if note not in pins:
            document = {"origin": origin, "public_key": public_key, "notes": [*pins, note]}
            write_atomic(path, (json.dumps(document, indent=1) + "\n").encode("utf-8"))
        return
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    evidence = path.with_name(f"{path.stem}.alarm-{stamp}.json")
    document = {"problems": check.problems, "pinned": pins, "shown": note}
    write_atomic(evidence, (json.dumps(document, indent=1) + "\n").encode("utf-8"))
    check.evidence = evidence
