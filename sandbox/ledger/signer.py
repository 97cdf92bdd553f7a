"""The signer's own memory: the last tree it signed, kept beside its key, never in the database.

Whoever can write the database can delete checkpoint rows, rewrite entries and re-hash the
stored tree; a signer that trusted those rows would sign the forged history. So the signer
keeps, in a file of its own (mode 0600, written atomically and fsynced, beside the operator
key), the size, root and signed note of the last checkpoint it signed and the compact range
of that tree (the O(log n) hashes of its right edge). It signs a new size only after it has
grown that range, entry by entry from the entries' own bytes, to the new size: a tree that
extends what it signed by construction. A database holding fewer entries (rolled back,
truncated), or whose stored tree disagrees with that computation (rewritten), makes it
refuse and say why.

Run the signer apart from the database's users: the key and this file belong to the
operator's account only (docs/operators.md). An installation that predates this file
starts it from the latest checkpoint in the database, once, after the full check that the
log ran before (trust on first use, logged).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sandbox.files import exclusive_lock, write_atomic
from sandbox.ledger.checkpoint import Checkpoint, verify_checkpoint
from sandbox.ledger.errors import CheckpointError, LedgerIntegrityError
from sandbox.ledger.merkle import HASH_SIZE, CompactRange

STATE_VERSION = 1
MAX_STATE_BYTES = 1_000_000


@dataclass(frozen=True)
class SignedHead:
    """The last tree the signer signed: its checkpoint, the note and the compact range."""

    checkpoint: Checkpoint
    note: str
    edge: tuple[bytes, ...]

    @property
    def size(self) -> int:
        return self.checkpoint.size

    def tree(self) -> CompactRange:
        return CompactRange(self.checkpoint.size, list(self.edge))


class SignerState:
    """The state file at ``path`` (a lock file beside it serialises signers)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the signer's lock: one signer at a time, across processes."""
        with exclusive_lock(self.path.with_name(self.path.name + ".lock")):
            yield

    def read(self, public_key: Ed25519PublicKey, origin: str) -> SignedHead | None:
        """The last signed head, checked (its note verifies, its range folds to its root);
        None when the signer has signed nothing yet."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LedgerIntegrityError(
                f"cannot read the signer's state {self.path}: {exc}"
            ) from exc
        if len(raw) > MAX_STATE_BYTES:
            raise LedgerIntegrityError(f"the signer's state {self.path} is too large")
        try:
            document = json.loads(raw)
            if document.get("version") != STATE_VERSION:
                raise ValueError("unknown version")
            note = str(document["note"])
            edge = tuple(base64.b64decode(h, validate=True) for h in document["edge"])
            checkpoint = verify_checkpoint(note, public_key, origin=origin)
        except (ValueError, KeyError, TypeError, CheckpointError) as exc:
            raise LedgerIntegrityError(
                f"the signer's state {self.path} cannot be trusted ({exc}); refusing to sign"
            ) from None
        head = SignedHead(checkpoint, note, edge)
        if any(len(h) != HASH_SIZE for h in edge) or head.tree().root() != checkpoint.root:
            raise LedgerIntegrityError(
                f"the signer's state {self.path} does not fold to its signed root; refusing"
            )
        return head

    def write(self, head: SignedHead) -> None:
        document = {
            "version": STATE_VERSION,
            "origin": head.checkpoint.origin,
            "size": head.size,
            "root": base64.b64encode(head.checkpoint.root).decode("ascii"),
            "note": head.note,
            "edge": [base64.b64encode(h).decode("ascii") for h in head.edge],
        }
        text = json.dumps(document, indent=1, sort_keys=True) + "\n"
        write_atomic(self.path, text.encode("utf-8"), mode=0o600)
        _fsync_folder(self.path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename that replaced the state file durable too."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
