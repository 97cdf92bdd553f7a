"""Reading the ledger: its size, its signed checkpoints (each signature checked), and its
entries through one query path, verified (:meth:`LedgerReader.entries`) or as stored
(:meth:`LedgerReader.stored_entries`, for readers who show evidence)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Select, select
from sqlalchemy.engine import Connection, Engine, Row

from sandbox.ledger.checkpoint import SignedCheckpoint, verify_checkpoint
from sandbox.ledger.entries import LedgerEntry, StoredEntry
from sandbox.ledger.errors import (
    CheckpointError,
    EntryNotFound,
    LedgerIntegrityError,
    RecordError,
)
from sandbox.ledger.merkle import leaf_hash
from sandbox.ledger.records import LedgerRecord, format_time, parse_record
from sandbox.ledger.store import (
    HEAD_ID,
    checkpoint_table,
    entry_table,
    head_table,
    party_table,
    read_snapshot,
)

MAX_PAGE = 1_000


@dataclass(frozen=True)
class EntryQuery:
    """Which entries: in index order after ``after_index``, at most ``limit`` (up to 1,000).

    ``since`` is inclusive and ``until`` exclusive (record time); ``company`` matches the
    actor's organisation, the data owner or a participant; ``allowed`` matches decisions."""

    after_index: int = -1
    limit: int = 100
    since: datetime | None = None
    until: datetime | None = None
    principal: str | None = None
    company: str | None = None
    data_owner: str | None = None
    job_id: str | None = None
    action: str | None = None
    allowed: bool | None = None

    def statement(self) -> Select[Any]:
        if not 1 <= self.limit <= MAX_PAGE:
            raise ValueError(f"limit is between 1 and {MAX_PAGE}")
        c = entry_table.c
        query = select(c.idx, c.entry, c.leaf_hash).where(c.idx > self.after_index)
        if self.since is not None:
            query = query.where(c.recorded_at >= format_time(self.since))
        if self.until is not None:
            query = query.where(c.recorded_at < format_time(self.until))
        for column, value in (
            (c.actor_principal, self.principal),
            (c.data_owner, self.data_owner),
            (c.job_id, self.job_id),
            (c.action, self.action),
            (c.decision_allowed, self.allowed),
        ):
            if value is not None:
                query = query.where(column == value)
        if self.company is not None:
            involved = select(party_table.c.idx).where(party_table.c.company == self.company)
            query = query.where(c.idx.in_(involved))
        return query.order_by(c.idx).limit(self.limit)


class LedgerReader:
    """The reading side of :class:`sandbox.ledger.log.Ledger`."""

    _engine: Engine
    origin: str
    public_key: Ed25519PublicKey

    @property
    def size(self) -> int:
        """The number of entries committed."""
        with self._engine.connect() as conn:
            size: int = conn.execute(
                select(head_table.c.size).where(head_table.c.id == HEAD_ID)
            ).scalar_one()
            return size

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        """The latest signed checkpoint, its signature checked; None before the first."""
        with read_snapshot(self._engine) as conn:
            return self._latest(conn)

    def checkpoints(self) -> list[SignedCheckpoint]:
        """Every signed checkpoint, oldest first, each signature checked."""
        with read_snapshot(self._engine) as conn:
            rows = conn.execute(select(checkpoint_table).order_by(checkpoint_table.c.size)).all()
        return [self._checked(row) for row in rows]

    def _latest(self, conn: Connection) -> SignedCheckpoint | None:
        row = conn.execute(
            select(checkpoint_table).order_by(checkpoint_table.c.size.desc()).limit(1)
        ).first()
        return None if row is None else self._checked(row)

    def _checked(self, row: Row[Any]) -> SignedCheckpoint:
        size, root, note, signed_at = row.size, row.root, row.note, row.signed_at
        try:
            checkpoint = verify_checkpoint(note, self.public_key, origin=self.origin)
        except CheckpointError as exc:
            raise LedgerIntegrityError(f"stored checkpoint at size {size}: {exc}") from exc
        if (checkpoint.size, checkpoint.root) != (size, root):
            raise LedgerIntegrityError(f"stored checkpoint at size {size} differs from its note")
        return SignedCheckpoint(checkpoint, note, signed_at)

    # -- entries ---------------------------------------------------------------------------

    def _rows(self, query: EntryQuery) -> list[Row[Any]]:
        with self._engine.connect() as conn:
            return list(conn.execute(query.statement()).all())

    def entries(self, **query: Any) -> list[LedgerEntry]:
        """Entries matching :class:`EntryQuery` (its fields as keywords). Raises
        :class:`LedgerIntegrityError` on an entry whose bytes no longer match its leaf hash."""
        return [_verified(row) for row in self._rows(EntryQuery(**query))]

    def stored_entries(self, **query: Any) -> list[StoredEntry]:
        """As :meth:`entries`, but a changed entry is returned as stored, with its problem,
        instead of raising (for readers who show evidence: the audit API and console)."""
        return [_as_stored(row) for row in self._rows(EntryQuery(**query))]

    def entry(self, index: int) -> LedgerEntry:
        """The entry at ``index``."""
        found = self.entries(after_index=index - 1, limit=1)
        if not found or found[0].index != index:
            raise EntryNotFound(f"no entry at index {index}")
        return found[0]

    def stored_entry(self, index: int) -> StoredEntry:
        """The entry at ``index`` as stored (see :meth:`stored_entries`)."""
        found = self.stored_entries(after_index=index - 1, limit=1)
        if not found or found[0].index != index:
            raise EntryNotFound(f"no entry at index {index}")
        return found[0]

    def iter_entries(self, *, start: int = 0, stop: int | None = None) -> Iterator[LedgerEntry]:
        """Every entry from ``start`` up to (not including) ``stop``, in index order."""
        after = start - 1
        while True:
            page = self.entries(after_index=after, limit=MAX_PAGE)
            for item in page:
                if stop is not None and item.index >= stop:
                    return
                yield item
            if len(page) < MAX_PAGE:
                return
            after = page[-1].index


def _verified(row: Row[Any]) -> LedgerEntry:
    entry = row.entry.encode("utf-8")
    leaf = leaf_hash(entry)
    if leaf != row.leaf_hash:
        raise LedgerIntegrityError(f"entry {row.idx} does not match its leaf hash (changed)")
    return LedgerEntry(row.idx, entry, leaf, parse_record(entry))


def _as_stored(row: Row[Any]) -> StoredEntry:
    entry = row.entry.encode("utf-8")
    problem = None
    if leaf_hash(entry) != row.leaf_hash:
        problem = f"entry {row.idx} does not match its leaf hash (changed)"
    try:
        record: LedgerRecord | None = parse_record(entry)
    except RecordError as exc:
        record = None
        problem = problem or f"entry {row.idx} does not parse: {exc}"
    return StoredEntry(row.idx, entry, row.leaf_hash, record, problem)
