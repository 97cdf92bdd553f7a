"""Proving from the ledger: roots, inclusion and consistency proofs, a full verification, and
self-contained export bundles (around :mod:`sandbox.ledger.merkle`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from sandbox.ledger.appender import LedgerAppender
from sandbox.ledger.bundle import write_bundle
from sandbox.ledger.checkpoint import Checkpoint, SignedCheckpoint
from sandbox.ledger.entries import ConsistencyProof, InclusionProof, StoredEntry
from sandbox.ledger.errors import EntryNotFound, LedgerError, LedgerIntegrityError
from sandbox.ledger.merkle import EMPTY_ROOT, consistency_spans, inclusion_spans
from sandbox.ledger.problems import problem_records
from sandbox.ledger.reader import MAX_PAGE
from sandbox.ledger.store import (
    HEAD_ID,
    checkpoint_table,
    entry_table,
    head_table,
    read_snapshot,
    span_hashes,
    tree_at,
)
from sandbox.ledger.verify import Progress, VerificationReport, verify_database


class LedgerProver(LedgerAppender):
    """The proving side of :class:`sandbox.ledger.log.Ledger`."""

    def root(self, tree_size: int) -> bytes:
        """The root of the tree of the first ``tree_size`` entries, from stored nodes."""
        with read_snapshot(self._engine) as conn:
            _check_size(conn, tree_size)
            return tree_at(conn, tree_size).root() if tree_size else EMPTY_ROOT

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> InclusionProof:
        """Proof that entry ``index`` is in the tree of ``tree_size`` entries (default: the
        latest checkpoint's size)."""
        with read_snapshot(self._engine) as conn:
            if tree_size is None:
                latest = self._latest(conn)
                if latest is None:
                    raise LedgerError("no checkpoint has been signed yet")
                tree_size = latest.size
            _check_size(conn, tree_size)
            if not 0 <= index < tree_size:
                raise EntryNotFound(f"entry {index} is not in the tree of {tree_size} entries")
            spans = [(index, index + 1), *inclusion_spans(index, tree_size)]
            leaf, *hashes = span_hashes(conn, spans)
        return InclusionProof(index, tree_size, leaf, tuple(hashes))

    def _covering(self, index: int) -> SignedCheckpoint:
        """The latest signed checkpoint, or a new one signed now if it does not cover
        ``index``."""
        latest = self.latest_checkpoint()
        if latest is None or latest.size <= index:
            latest = self.checkpoint()
        return latest

    def prove_stored(self, index: int) -> tuple[StoredEntry, InclusionProof, SignedCheckpoint]:
        """As :meth:`prove`, for an entry that may have been changed: the stored bytes, the
        proof from the stored tree and the latest checkpoint that covers the entry. When no
        checkpoint covers it and none can be signed (the log fails its integrity check),
        :class:`LedgerIntegrityError` is raised."""
        latest = self._covering(index)
        return self.stored_entry(index), self.inclusion_proof(index, latest.size), latest

    def consistency_proof(self, old_size: int, new_size: int) -> ConsistencyProof:
        """Proof that the tree of ``old_size`` entries is a prefix of that of ``new_size``."""
        if not 0 <= old_size <= new_size:
            raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
        with read_snapshot(self._engine) as conn:
            _check_size(conn, new_size)
            hashes = span_hashes(conn, consistency_spans(old_size, new_size))
        return ConsistencyProof(old_size, new_size, tuple(hashes))

    # -- verification and export -----------------------------------------------------------

    def verify(
        self,
        progress: Progress | None = None,
        pins: Sequence[tuple[str, str]] = (),
        public_key: Ed25519PublicKey | bytes | str | None = None,
    ) -> VerificationReport:
        """Recompute everything from the stored entries against the signed checkpoints, the
        signer's memory of the last one it signed and any ``pins`` (``(where, note)``); see
        :func:`verify_database`. ``public_key`` defaults to the log's own."""
        key = self.public_key if public_key is None else public_key
        try:
            head = self._signer.read(self.public_key, self.origin)
        except LedgerIntegrityError as exc:
            report = verify_database(self._engine, key, self.origin, progress, pins=pins)
            report.problems.append(str(exc))
            report.indices.append(None)
            report.ok = False
            return report
        note = None if head is None else head.note
        return verify_database(self._engine, key, self.origin, progress, note, pins)

    def export_bundle(self, out_dir: Path, progress: Progress | None = None) -> Path:
        """Write a self-contained bundle of the ledger.

        A ledger that verifies gets a checkpoint of its current size signed first, and the
        bundle ends there. A ledger that fails is exported as it is (every entry and
        checkpoint row as stored) with ``problems.json`` listing what the verification
        found, and no checkpoint is signed over it: an export is evidence.
        """
        report = self.verify()
        if report.ok:
            try:
                latest = self.checkpoint()
            except LedgerIntegrityError as exc:
                report.ok = False
                report.problems.append(str(exc))
                report.indices.append(None)
            else:
                return write_bundle(
                    Path(out_dir),
                    origin=self.origin,
                    public_key=self.public_key,
                    checkpoints=[cp for cp in self.checkpoints() if cp.size <= latest.size],
                    rows=self._export_rows(latest.size),
                    progress=progress,
                )
        with read_snapshot(self._engine) as conn:
            stored = [
                SignedCheckpoint(Checkpoint(self.origin, row.size, row.root), row.note)
                for row in conn.execute(select(checkpoint_table).order_by(checkpoint_table.c.size))
            ]
            last = conn.execute(select(func.max(entry_table.c.idx))).scalar_one_or_none()
        return write_bundle(
            Path(out_dir),
            origin=self.origin,
            public_key=self.public_key,
            checkpoints=stored,
            rows=self._export_rows(-1 if last is None else last + 1),
            progress=progress,
            tree_size=self.size,
            problems=problem_records(report.problems, report.indices),
        )

    def _export_rows(self, size: int) -> Iterator[tuple[int, bytes, bytes, bytes]]:
        """``(index, entry, leaf hash, root after it)`` as stored, unvalidated: an export
        is evidence and must show what is there, tampered or not."""
        c = entry_table.c
        after = -1
        while after + 1 < size:
            with self._engine.connect() as conn:
                rows = conn.execute(
                    select(c.idx, c.entry, c.leaf_hash, c.tree_root)
                    .where(c.idx > after, c.idx < size)
                    .order_by(c.idx)
                    .limit(10 * MAX_PAGE)
                ).all()
            if not rows:
                return
            for row in rows:
                yield row.idx, row.entry.encode("utf-8"), row.leaf_hash, row.tree_root
            after = rows[-1].idx


def _check_size(conn: Connection, tree_size: int) -> None:
    size = conn.execute(select(head_table.c.size).where(head_table.c.id == HEAD_ID)).scalar_one()
    if not 0 <= tree_size <= size:
        raise LedgerError(f"the log has {size} entries; there is no tree of {tree_size}")
