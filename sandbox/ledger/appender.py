"""Writing the ledger: appending records (all of a batch or none), and signing checkpoints
only over a tree that provably extends the last one signed."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from sandbox.ledger.chain import chain_lines
from sandbox.ledger.checkpoint import (
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    Checkpoint,
    SignedCheckpoint,
    sign_checkpoint,
    verify_checkpoint,
)
from sandbox.ledger.entries import Appended
from sandbox.ledger.errors import (
    CheckpointError,
    LedgerError,
    LedgerIntegrityError,
    LedgerWriteError,
    RecordError,
)
from sandbox.ledger.group import GroupCommit
from sandbox.ledger.merkle import CompactRange, leaf_hash
from sandbox.ledger.reader import LedgerReader
from sandbox.ledger.records import LedgerRecord, canonical_entry, is_canonical
from sandbox.ledger.signer import SignedHead, SignerState
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
    tree_at,
    write_lock,
)
from sandbox.ledger.witness import WitnessKey, cosignature_time, with_cosignatures
from sandbox.utc import utcnow

log = logging.getLogger(__name__)


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
    _signer: SignerState
    _group: GroupCommit[_Prepared, Appended]

    def append(self, record: LedgerRecord) -> Appended:
        """Append one record; returns its index. Raises if it was not recorded."""
        return self.append_many([record])[0]

    def append_many(self, records: Sequence[LedgerRecord]) -> list[Appended]:
        """Append records in order, all of them or none; returns once they are committed
        (synced). Concurrent callers in this process share commits (:mod:`.group`)."""
        prepared = [_prepare(record) for record in records]
        if not prepared:
            return []
        if len({item.record_id for item in prepared}) != len(prepared):
            raise RecordError("a batch repeats a record_id")
        return self._group.submit(prepared)

    def _commit_prepared(self, prepared: list[_Prepared]) -> list[Appended]:
        """One transaction under the ledger's write lock (the group's writer)."""
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
        """Sign the current size if it is newer than the last one signed; return the latest.

        The signer's own state (:mod:`sandbox.ledger.signer`), not the database, says what
        it signed last. The entries added since are re-hashed from their stored bytes onto
        that tree; the result must agree with the stored leaf hashes, roots and nodes, and
        every new entry must be RFC 8785 canonical. Otherwise, or when the database holds
        fewer entries than were signed, or lacks the checkpoint the signer signed last,
        nothing is signed and :class:`LedgerIntegrityError` says why.
        """
        with self._signer.locked():
            try:
                with write_lock(self._engine) as (conn, size):
                    head = self._signed_head(conn)
                    signed, grown = self._extend(conn, head, size)
                    if grown is None:
                        return signed
                    conn.execute(
                        insert(checkpoint_table).values(
                            size=size,
                            root=signed.root,
                            note=signed.note,
                            signed_at=signed.signed_at,
                        )
                    )
            except SQLAlchemyError as exc:
                raise LedgerWriteError(f"no checkpoint was signed: {exc}") from exc
            self._signer.write(grown)
            return signed

    def _signed_head(self, conn: Connection) -> SignedHead | None:
        """The signer's last signed head; on an installation without a state file yet, the
        latest checkpoint in the database after the full replay check (trust on first use)."""
        head = self._signer.read(self.public_key, self.origin)
        if head is not None:
            return head
        latest = self._latest(conn)
        if latest is None:
            return None
        tree = self._replayed(conn, None, latest.size)
        if tree.root() != latest.root:
            raise LedgerIntegrityError(
                f"the entries do not produce the root signed at size {latest.size}"
            )
        log.warning("ledger signer: no state file; starting it from checkpoint %d", latest.size)
        return SignedHead(latest.checkpoint, latest.note, tuple(tree.hashes))

    def _extend(
        self, conn: Connection, head: SignedHead | None, size: int
    ) -> tuple[SignedCheckpoint, SignedHead | None]:
        """The checkpoint to hand out, and the new head when one was signed (None: the log
        has not grown since ``head``)."""
        signed_size = 0 if head is None else head.size
        if size < signed_size:
            raise LedgerIntegrityError(
                f"the database holds {size} entries but the signer signed size {signed_size}: "
                "the log was rolled back or truncated; refusing to sign"
            )
        last_signed = None
        if head is not None:
            last_signed = self._check_signed_row(conn, head)
            stored = tree_at(conn, head.size).root() if head.size else head.checkpoint.root
            if stored != head.checkpoint.root:
                raise LedgerIntegrityError(
                    f"the stored tree at size {head.size} is not the one the signer signed: "
                    f"entries before index {head.size} were rewritten; refusing to sign"
                )
        if last_signed is not None and size == last_signed.size:
            return last_signed, None
        tree = self._replayed(conn, head, size)
        root = tree.root()
        if tree_at(conn, size).root() != root:
            raise LedgerIntegrityError(
                f"the stored tree nodes at size {size} disagree with the entries; refusing"
            )
        now = utcnow()
        previous = None if head is None else head.checkpoint
        checkpoint = Checkpoint(self.origin, size, root, chain_lines(previous, now))
        note = sign_checkpoint(checkpoint, self._signing_key)
        return SignedCheckpoint(checkpoint, note, now), SignedHead(
            checkpoint, note, tuple(tree.hashes)
        )

    def _check_signed_row(self, conn: Connection, head: SignedHead) -> SignedCheckpoint:
        """The checkpoint the signer signed last, which must still be in the database."""
        row = conn.execute(
            select(checkpoint_table.c.note, checkpoint_table.c.signed_at).where(
                checkpoint_table.c.size == head.size
            )
        ).first()
        if row is None:
            raise LedgerIntegrityError(
                f"the checkpoint the signer signed at size {head.size} is missing from the "
                "database: checkpoints were deleted; refusing to sign"
            )
        try:
            stored = verify_checkpoint(row.note, self.public_key, origin=self.origin)
        except CheckpointError as exc:
            raise LedgerIntegrityError(
                f"the stored checkpoint at size {head.size} is not the one signed: {exc}"
            ) from exc
        if stored.root != head.checkpoint.root:
            raise LedgerIntegrityError(
                f"the stored checkpoint at size {head.size} has another root than the one the "
                "signer signed (split view); refusing to sign"
            )
        return SignedCheckpoint(stored, row.note, row.signed_at)

    def _replayed(self, conn: Connection, head: SignedHead | None, size: int) -> CompactRange:
        """The tree at ``size``: ``head``'s range grown by the entries after it, each hashed
        from its bytes, canonical, and matching its stored leaf hash and root."""
        tree = CompactRange.empty() if head is None else head.tree()
        c = entry_table.c
        rows = conn.execute(
            select(c.idx, c.entry, c.leaf_hash, c.tree_root)
            .where(c.idx >= tree.size, c.idx < size)
            .order_by(c.idx)
        )
        for row in rows:
            entry = row.entry.encode("utf-8")
            leaf = leaf_hash(entry)
            if row.idx != tree.size:
                raise LedgerIntegrityError(f"entry {tree.size} is missing (deleted)")
            if leaf != row.leaf_hash:
                raise LedgerIntegrityError(f"entry {row.idx} was changed after it was hashed")
            if not is_canonical(entry):
                raise LedgerIntegrityError(f"entry {row.idx} is not in RFC 8785 canonical form")
            tree.append(leaf)
            if tree.root() != row.tree_root:
                raise LedgerIntegrityError(f"entry {row.idx} is out of place (moved or inserted)")
        if tree.size != size:
            raise LedgerIntegrityError(f"entry {tree.size} is missing (deleted)")
        return tree

    def add_cosignature(self, size: int, line: str, witness: WitnessKey) -> None:
        """Add a witness's cosignature line to the stored checkpoint of ``size``, once it
        verifies with the witness's key (:class:`CheckpointError` otherwise)."""
        try:
            with write_lock(self._engine) as (conn, _):
                row = conn.execute(
                    select(checkpoint_table.c.note).where(checkpoint_table.c.size == size)
                ).first()
                if row is None:
                    raise LedgerError(f"no checkpoint at size {size}")
                note = with_cosignatures(row.note, [line])
                cosignature_time(note, witness.name, witness.public_key)
                lines = note[note.rfind("\n\n") + 2 :].count("\n")
                if lines > MAX_SIGNATURES or len(note.encode("utf-8")) > MAX_NOTE_BYTES:
                    raise LedgerError(
                        f"the checkpoint at size {size} holds as many signatures as a note may"
                    )
                if note != row.note:
                    conn.execute(
                        update(checkpoint_table)
                        .where(checkpoint_table.c.size == size)
                        .values(note=note)
                    )
        except SQLAlchemyError as exc:
            raise LedgerWriteError(f"the cosignature was not stored: {exc}") from exc
