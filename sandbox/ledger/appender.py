"""Writing the ledger: appending records (all of a batch or none), and signing checkpoints
only over a tree that provably extends the last one signed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from sandbox.ledger.checkpoint import Checkpoint, SignedCheckpoint, sign_checkpoint
from sandbox.ledger.entries import Appended
from sandbox.ledger.errors import LedgerIntegrityError, LedgerWriteError, RecordError
from sandbox.ledger.merkle import CompactRange, consistency_spans, leaf_hash, verify_consistency
from sandbox.ledger.reader import LedgerReader
from sandbox.ledger.records import LedgerRecord, canonical_entry
from sandbox.ledger.store import (
    HEAD_ID,
    checkpoint_table,
    entry_table,
    head_table,
    node_table,
    parse_entry_json,
    parties,
    party_table,
    query_columns,
    span_hashes,
    tree_at,
    write_lock,
)
from sandbox.utc import utcnow


@dataclass(frozen=True)
class _Prepared:
    record_id: str
    entry: bytes
    leaf: bytes
    columns: dict[str, object]
    parties: set[str]


def _prepare(record: LedgerRecord) -> _Prepared:
    entry = canonical_entry(record)
    document = parse_entry_json(entry)
    return _Prepared(
        record_id=record.record_id,
        entry=entry,
        leaf=leaf_hash(entry),
        columns=query_columns(document),
        parties=parties(document),
    )


class LedgerAppender(LedgerReader):
    """The writing side of :class:`sandbox.ledger.log.Ledger`. Every write raises on failure
    (:class:`LedgerWriteError`); nothing is ever swallowed, so a caller that must record
    before acting can deny when the ledger cannot record."""

    _engine: Engine
    _signing_key: Ed25519PrivateKey

    def append(self, record: LedgerRecord) -> Appended:
        """Append one record; returns its index. Raises if it was not recorded."""
        return self.append_many([record])[0]

    def append_many(self, records: Sequence[LedgerRecord]) -> list[Appended]:
        """Append records in one transaction, in order: all of them or none."""
        prepared = [_prepare(record) for record in records]
        if not prepared:
            return []
        if len({item.record_id for item in prepared}) != len(prepared):
            raise RecordError("a batch repeats a record_id")
        try:
            with write_lock(self._engine) as (conn, size):
                return self._write(conn, size, prepared)
        except SQLAlchemyError as exc:
            raise LedgerWriteError(f"nothing was appended: {exc}") from exc

    def _write(self, conn: Connection, size: int, prepared: list[_Prepared]) -> list[Appended]:
        tree = tree_at(conn, size)
        entry_rows: list[dict[str, object]] = []
        node_rows: list[dict[str, object]] = []
        party_rows: list[dict[str, object]] = []
        appended: list[Appended] = []
        for index, item in enumerate(prepared, start=size):
            completed = tree.append(item.leaf)
            node_rows.extend(
                {"level": level, "idx": node_index, "hash": node}
                for level, node_index, node in completed[1:]
            )
            entry_rows.append(
                {
                    "idx": index,
                    "entry": item.entry.decode("utf-8"),
                    "leaf_hash": item.leaf,
                    "tree_root": tree.root(),
                    **item.columns,
                }
            )
            party_rows.extend({"idx": index, "company": company} for company in item.parties)
            appended.append(Appended(index, item.leaf, item.record_id))
        conn.execute(insert(entry_table), entry_rows)
        if node_rows:
            conn.execute(insert(node_table), node_rows)
        if party_rows:
            conn.execute(insert(party_table), party_rows)
        conn.execute(
            update(head_table)
            .where(head_table.c.id == HEAD_ID)
            .values(size=tree.size, updated_at=utcnow())
        )
        return appended

    def checkpoint(self) -> SignedCheckpoint:
        """Sign the current size if it is newer than the latest checkpoint; return the latest.

        Before signing, the entries added since the last checkpoint are re-hashed from their
        stored bytes onto the tree that checkpoint signed, and the result must agree with the
        stored nodes and be provably consistent with it. Otherwise nothing is signed and
        :class:`LedgerIntegrityError` is raised: the log never signs a tree inconsistent with
        one it signed before, nor a smaller one.
        """
        try:
            with write_lock(self._engine) as (conn, size):
                latest = self._latest(conn)
                if latest is not None and latest.size > size:
                    raise LedgerIntegrityError(
                        f"the log holds {size} entries but size {latest.size} was signed: "
                        "entries were removed; refusing to sign"
                    )
                if latest is not None and latest.size == size:
                    return latest
                root = self._replay_since(conn, latest, size)
                checkpoint = Checkpoint(self.origin, size, root)
                signed = SignedCheckpoint(
                    checkpoint, sign_checkpoint(checkpoint, self._signing_key), utcnow()
                )
                conn.execute(
                    insert(checkpoint_table).values(
                        size=size, root=root, note=signed.note, signed_at=signed.signed_at
                    )
                )
                return signed
        except SQLAlchemyError as exc:
            raise LedgerWriteError(f"no checkpoint was signed: {exc}") from exc

    def _replay_since(self, conn: Connection, latest: SignedCheckpoint | None, size: int) -> bytes:
        """The root at ``size``, recomputed from the entries after ``latest`` on top of the
        tree ``latest`` signed, and cross-checked with the stored nodes."""
        if latest is None or latest.size == 0:
            tree = CompactRange.empty()
        else:
            tree = tree_at(conn, latest.size)
            if tree.root() != latest.root:
                raise LedgerIntegrityError(
                    f"the stored tree at size {latest.size} does not match the signed checkpoint"
                )
        c = entry_table.c
        rows = conn.execute(
            select(c.idx, c.entry, c.leaf_hash, c.tree_root)
            .where(c.idx >= tree.size, c.idx < size)
            .order_by(c.idx)
        )
        for row in rows:
            leaf = leaf_hash(row.entry.encode("utf-8"))
            if row.idx != tree.size or leaf != row.leaf_hash:
                raise LedgerIntegrityError(f"entry {tree.size} is missing or changed")
            tree.append(leaf)
            if tree.root() != row.tree_root:
                raise LedgerIntegrityError(f"entry {row.idx} is out of place (moved or inserted)")
        if tree.size != size:
            raise LedgerIntegrityError(f"entry {tree.size} is missing")
        root = tree.root()
        if size and tree_at(conn, size).root() != root:
            raise LedgerIntegrityError(
                f"the stored tree nodes at size {size} disagree with entries"
            )
        if latest is not None and latest.size > 0:
            proof = span_hashes(conn, consistency_spans(latest.size, size))
            if not verify_consistency(latest.size, size, latest.root, root, proof):
                raise LedgerIntegrityError(
                    f"size {size} is not consistent with the checkpoint at size {latest.size}"
                )
        return root
