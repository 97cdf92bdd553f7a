"""The ledger: an append-only, Merkle-hashed log of records with signed checkpoints."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import SQLModel

from sandbox.config import Settings, load_settings
from sandbox.db import get_engine
from sandbox.identity import public_b64, sandbox_key
from sandbox.ledger.bundle import write_bundle
from sandbox.ledger.checkpoint import (
    Checkpoint,
    SignedCheckpoint,
    check_origin,
    sign_checkpoint,
    verifier_key,
    verify_checkpoint,
)
from sandbox.ledger.errors import (
    CheckpointError,
    EntryNotFound,
    LedgerError,
    LedgerIntegrityError,
    LedgerWriteError,
    RecordError,
)
from sandbox.ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_spans,
    inclusion_spans,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from sandbox.ledger.records import LedgerRecord, canonical_entry, format_time
from sandbox.ledger.records import parse_record as _parse_record
from sandbox.ledger.store import (
    HEAD_ID,
    LEDGER_TABLES,
    checkpoint_table,
    entry_table,
    head_table,
    node_table,
    parse_entry_json,
    parties,
    party_table,
    query_columns,
    read_snapshot,
    span_hashes,
    tree_at,
    write_lock,
)
from sandbox.ledger.verify import Progress, VerificationReport, verify_database

MAX_PAGE = 1_000


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


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; the ledger writes UTC only.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Ledger:
    """The audit ledger in one database.

    ``Ledger.open()`` takes the database, operator key and origin from the settings. Every
    write raises on failure (:class:`LedgerWriteError`); nothing is ever swallowed, so a
    caller that must record before acting can deny when the ledger cannot record.
    """

    def __init__(self, engine: Engine, signing_key: Ed25519PrivateKey, origin: str) -> None:
        if not isinstance(signing_key, Ed25519PrivateKey):
            raise TypeError("the ledger signs with an Ed25519 private key")
        self.origin = check_origin(origin)
        self._engine = engine
        self._signing_key = signing_key
        self.public_key: Ed25519PublicKey = signing_key.public_key()
        SQLModel.metadata.create_all(engine, tables=list(LEDGER_TABLES))
        self._ensure_head()

    @classmethod
    def open(cls, settings: Settings | None = None) -> Ledger:
        """The ledger of the sandbox: its database, its operator key, its origin."""
        settings = settings or load_settings()
        return cls(
            get_engine(settings.database_url),
            sandbox_key(settings.keys_dir, "operator"),
            settings.ledger_origin,
        )

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def public_key_b64(self) -> str:
        return public_b64(self.public_key)

    @property
    def verifier_key(self) -> str:
        """The public key as a signed-note verifier key (``origin+keyid+base64``)."""
        return verifier_key(self.origin, self.public_key)

    def _ensure_head(self) -> None:
        with self._engine.connect() as conn:
            origin = conn.execute(
                select(head_table.c.origin).where(head_table.c.id == HEAD_ID)
            ).scalar_one_or_none()
            if origin is None:
                try:
                    conn.execute(
                        insert(head_table).values(
                            id=HEAD_ID, origin=self.origin, size=0, updated_at=datetime.now(UTC)
                        )
                    )
                    conn.commit()
                    return
                except IntegrityError:  # another process created it first: read theirs
                    conn.rollback()
                    origin = conn.execute(
                        select(head_table.c.origin).where(head_table.c.id == HEAD_ID)
                    ).scalar_one()
        if origin != self.origin:
            raise LedgerError(
                f"this database holds the ledger of {origin!r}, not of {self.origin!r}"
            )

    # -- writing ---------------------------------------------------------------------------

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
                appended = self._write(conn, size, prepared)
        except SQLAlchemyError as exc:
            raise LedgerWriteError(f"nothing was appended: {exc}") from exc
        return appended

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
            .values(size=tree.size, updated_at=datetime.now(UTC))
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
                    checkpoint, sign_checkpoint(checkpoint, self._signing_key), datetime.now(UTC)
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

    # -- reading ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """The number of entries committed."""
        with self._engine.connect() as conn:
            return conn.execute(
                select(head_table.c.size).where(head_table.c.id == HEAD_ID)
            ).scalar_one()

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
        return SignedCheckpoint(checkpoint, note, _utc(signed_at))

    def entry(self, index: int) -> LedgerEntry:
        """The entry at ``index``."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(entry_table.c.idx, entry_table.c.entry, entry_table.c.leaf_hash).where(
                    entry_table.c.idx == index
                )
            ).first()
        if row is None:
            raise EntryNotFound(f"no entry at index {index}")
        return self._entry(row)

    @staticmethod
    def _entry(row: Row[Any]) -> LedgerEntry:
        entry = row.entry.encode("utf-8")
        leaf = leaf_hash(entry)
        if leaf != row.leaf_hash:
            raise LedgerIntegrityError(f"entry {row.idx} does not match its leaf hash (changed)")
        return LedgerEntry(row.idx, entry, leaf, _parse_record(entry))

    def entries(
        self,
        *,
        after_index: int = -1,
        limit: int = 100,
        since: datetime | None = None,
        until: datetime | None = None,
        principal: str | None = None,
        company: str | None = None,
        data_owner: str | None = None,
        job_id: str | None = None,
        action: str | None = None,
        allowed: bool | None = None,
    ) -> list[LedgerEntry]:
        """Entries in index order after ``after_index``, at most ``limit`` (up to 1,000).

        ``since`` is inclusive and ``until`` exclusive (record time); ``company`` matches the
        actor's organisation, the data owner or a participant; ``allowed`` matches decisions.
        Page on by passing the last index you got as ``after_index``. Raises
        :class:`LedgerIntegrityError` on an entry whose bytes no longer match its leaf hash.
        """
        rows = self._rows(
            after_index,
            limit,
            since,
            until,
            principal,
            company,
            data_owner,
            job_id,
            action,
            allowed,
        )
        return [self._entry(row) for row in rows]

    def stored_entries(
        self,
        *,
        after_index: int = -1,
        limit: int = 100,
        since: datetime | None = None,
        until: datetime | None = None,
        principal: str | None = None,
        company: str | None = None,
        data_owner: str | None = None,
        job_id: str | None = None,
        action: str | None = None,
        allowed: bool | None = None,
    ) -> list[StoredEntry]:
        """As :meth:`entries`, but a changed entry is returned as stored, with its problem,
        instead of raising (for readers who show evidence: the audit API and console)."""
        rows = self._rows(
            after_index,
            limit,
            since,
            until,
            principal,
            company,
            data_owner,
            job_id,
            action,
            allowed,
        )
        return [self._stored(row) for row in rows]

    def _rows(self, *filters: Any) -> list[Any]:
        with self._engine.connect() as conn:
            return list(conn.execute(self._query(*filters)).all())

    def stored_entry(self, index: int) -> StoredEntry:
        """The entry at ``index`` as stored (see :meth:`stored_entries`)."""
        found = self.stored_entries(after_index=index - 1, limit=1)
        if not found or found[0].index != index:
            raise EntryNotFound(f"no entry at index {index}")
        return found[0]

    @staticmethod
    def _stored(row: Row[Any]) -> StoredEntry:
        entry = row.entry.encode("utf-8")
        problem = None
        if leaf_hash(entry) != row.leaf_hash:
            problem = f"entry {row.idx} does not match its leaf hash (changed)"
        try:
            record: LedgerRecord | None = _parse_record(entry)
        except RecordError as exc:
            record = None
            problem = problem or f"entry {row.idx} does not parse: {exc}"
        return StoredEntry(row.idx, entry, row.leaf_hash, record, problem)

    @staticmethod
    def _query(
        after_index: int,
        limit: int,
        since: datetime | None,
        until: datetime | None,
        principal: str | None,
        company: str | None,
        data_owner: str | None,
        job_id: str | None,
        action: str | None,
        allowed: bool | None,
    ) -> Any:
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit is between 1 and {MAX_PAGE}")
        c = entry_table.c
        query = select(c.idx, c.entry, c.leaf_hash).where(c.idx > after_index)
        if since is not None:
            query = query.where(c.recorded_at >= format_time(since))
        if until is not None:
            query = query.where(c.recorded_at < format_time(until))
        for column, value in (
            (c.actor_principal, principal),
            (c.data_owner, data_owner),
            (c.job_id, job_id),
            (c.action, action),
            (c.decision_allowed, allowed),
        ):
            if value is not None:
                query = query.where(column == value)
        if company is not None:
            involved = select(party_table.c.idx).where(party_table.c.company == company)
            query = query.where(c.idx.in_(involved))
        return query.order_by(c.idx).limit(limit)

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

    # -- proofs ----------------------------------------------------------------------------

    def root(self, tree_size: int) -> bytes:
        """The root of the tree of the first ``tree_size`` entries, from stored nodes."""
        with read_snapshot(self._engine) as conn:
            self._check_size(conn, tree_size)
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
            self._check_size(conn, tree_size)
            if not 0 <= index < tree_size:
                raise EntryNotFound(f"entry {index} is not in the tree of {tree_size} entries")
            spans = [(index, index + 1), *inclusion_spans(index, tree_size)]
            leaf, *hashes = span_hashes(conn, spans)
        return InclusionProof(index, tree_size, leaf, tuple(hashes))

    def prove(self, index: int) -> tuple[LedgerEntry, InclusionProof, SignedCheckpoint]:
        """Entry ``index``, its inclusion proof and the signed checkpoint the proof leads to:
        the latest one, or a new one signed now if the latest does not cover the entry."""
        latest = self.latest_checkpoint()
        if latest is None or latest.size <= index:
            latest = self.checkpoint()
        proof = self.inclusion_proof(index, latest.size)
        return self.entry(index), proof, latest

    def prove_stored(self, index: int) -> tuple[StoredEntry, InclusionProof, SignedCheckpoint]:
        """As :meth:`prove`, for an entry that may have been changed: the stored bytes, the
        proof from the stored tree and the latest checkpoint that covers the entry. When no
        checkpoint covers it and none can be signed (the log fails its integrity check),
        :class:`LedgerIntegrityError` is raised."""
        latest = self.latest_checkpoint()
        if latest is None or latest.size <= index:
            latest = self.checkpoint()
        proof = self.inclusion_proof(index, latest.size)
        return self.stored_entry(index), proof, latest

    def consistency_proof(self, old_size: int, new_size: int) -> ConsistencyProof:
        """Proof that the tree of ``old_size`` entries is a prefix of that of ``new_size``."""
        if not 0 <= old_size <= new_size:
            raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
        with read_snapshot(self._engine) as conn:
            self._check_size(conn, new_size)
            hashes = span_hashes(conn, consistency_spans(old_size, new_size))
        return ConsistencyProof(old_size, new_size, tuple(hashes))

    @staticmethod
    def _check_size(conn: Connection, tree_size: int) -> None:
        size = conn.execute(
            select(head_table.c.size).where(head_table.c.id == HEAD_ID)
        ).scalar_one()
        if not 0 <= tree_size <= size:
            raise LedgerError(f"the log has {size} entries; there is no tree of {tree_size}")

    # -- verification and export -----------------------------------------------------------

    def verify(self, progress: Progress | None = None) -> VerificationReport:
        """Recompute everything from the stored entries; see :func:`verify_database`."""
        return verify_database(self._engine, self.public_key, self.origin, progress)

    def export_bundle(self, out_dir: Path, progress: Progress | None = None) -> Path:
        """Sign a checkpoint of the current size and write a self-contained bundle of it."""
        latest = self.checkpoint()
        return write_bundle(
            Path(out_dir),
            origin=self.origin,
            public_key=self.public_key,
            checkpoints=[cp for cp in self.checkpoints() if cp.size <= latest.size],
            rows=self._export_rows(latest.size),
            progress=progress,
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
