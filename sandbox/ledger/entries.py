"""What the ledger hands out: where a record landed, entries (verified, or as stored), and
inclusion and consistency proofs."""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.ledger.merkle import verify_consistency, verify_inclusion
from sandbox.ledger.records import LedgerRecord


@dataclass(frozen=True)
class Appended:
    """Where a record landed."""

    index: int
    leaf_hash: bytes
    record_id: str


@dataclass(frozen=True)
class LedgerEntry:
    """One stored entry: its index, its exact bytes, their leaf hash and the parsed record."""

    index: int
    entry: bytes
    leaf_hash: bytes
    record: LedgerRecord


@dataclass(frozen=True)
class StoredEntry:
    """An entry as the database holds it, read without trusting it: ``leaf_hash`` is the
    stored leaf hash (what the tree commits to) and ``problem`` says why the stored bytes fail
    their check (``record`` is None when they no longer parse). Evidence must show what is
    there, tampered or not, so that a verifier can see the failure for itself."""

    index: int
    entry: bytes
    leaf_hash: bytes
    record: LedgerRecord | None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class InclusionProof:
    """Entry ``index`` is in the tree of ``tree_size`` leaves; ``hashes`` lead from its leaf
    hash to the root."""

    index: int
    tree_size: int
    leaf_hash: bytes
    hashes: tuple[bytes, ...]

    def verify(self, root: bytes) -> bool:
        """True when the proof leads to ``root`` (take it from a verified checkpoint)."""
        return verify_inclusion(self.leaf_hash, self.index, self.tree_size, self.hashes, root)


@dataclass(frozen=True)
class ConsistencyProof:
    """The tree of ``old_size`` leaves is a prefix of the tree of ``new_size`` leaves."""

    old_size: int
    new_size: int
    hashes: tuple[bytes, ...]

    def verify(self, old_root: bytes, new_root: bytes) -> bool:
        return verify_consistency(self.old_size, self.new_size, old_root, new_root, self.hashes)
