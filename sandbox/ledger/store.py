"""The ledger's tables.

- ``ledger_head``: one row; the log's origin and committed size. Writers lock it (Postgres
  ``SELECT ... FOR UPDATE``; SQLite holds the database write lock from ``BEGIN IMMEDIATE``).
- ``ledger_entry``: one row per entry: the canonical JSON that the leaf hashes, the leaf hash,
  the tree root right after this entry, and query columns derived from the record.
- ``ledger_party``: the companies an entry involves (actor organisation, data owner,
  participants), so that a company can find every use of its data without parsing JSON.
- ``ledger_node``: the hash of every complete perfect subtree of two or more leaves, keyed
  ``(level, idx)``; level 0 is ``ledger_entry.leaf_hash``.
- ``ledger_checkpoint``: every signed checkpoint.

The query columns are copies: verification recomputes them from the entry and reports any
difference. Entries, nodes and checkpoints are never updated or deleted by this code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
    and_,
    or_,
    select,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, SQLModel
from sqlmodel.sql.sqltypes import UTCDateTime

from sandbox.ledger.errors import LedgerIntegrityError
from sandbox.ledger.merkle import CompactRange, NodeId, Span, nodes_for, span_hash

# SQLite makes an INTEGER PRIMARY KEY the row id, the fastest key it has.
_Index = BigInteger().with_variant(Integer(), "sqlite")


class LedgerHead(SQLModel, table=True):
    __tablename__ = "ledger_head"

    id: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    origin: str = Field(sa_column=Column(String(200), nullable=False))
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class LedgerEntryRow(SQLModel, table=True):
    __tablename__ = "ledger_entry"
    __table_args__ = (
        Index("ix_ledger_entry_action", "action", "idx"),
        Index("ix_ledger_entry_principal", "actor_principal", "idx"),
        Index("ix_ledger_entry_owner", "data_owner", "idx"),
        Index("ix_ledger_entry_job", "job_id", "idx"),
        Index("ix_ledger_entry_time", "recorded_at"),
    )

    idx: int = Field(sa_column=Column(_Index, primary_key=True, autoincrement=False))
    record_id: str = Field(sa_column=Column(String(128), nullable=False, unique=True))
    entry: str = Field(sa_column=Column(Text, nullable=False))
    leaf_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    tree_root: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    recorded_at: str = Field(sa_column=Column(String(27), nullable=False))
    action: str = Field(sa_column=Column(String(64), nullable=False))
    actor_principal: str = Field(sa_column=Column(String(128), nullable=False))
    actor_organisation: str | None = Field(default=None, sa_column=Column(String(128)))
    data_owner: str | None = Field(default=None, sa_column=Column(String(128)))
    job_id: str | None = Field(default=None, sa_column=Column(String(128)))
    decision_allowed: bool | None = Field(default=None, sa_column=Column(Boolean))


class LedgerParty(SQLModel, table=True):
    __tablename__ = "ledger_party"
    __table_args__ = (
        Index("ix_ledger_party_company", "company", "idx"),
        {"sqlite_with_rowid": False},
    )

    idx: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    company: str = Field(sa_column=Column(String(128), primary_key=True))


class LedgerNode(SQLModel, table=True):
    __tablename__ = "ledger_node"
    __table_args__ = ({"sqlite_with_rowid": False},)  # stored in primary-key order

    level: int = Field(sa_column=Column(SmallInteger, primary_key=True, autoincrement=False))
    idx: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))


class LedgerCheckpointRow(SQLModel, table=True):
    __tablename__ = "ledger_checkpoint"

    size: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    root: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    note: str = Field(sa_column=Column(Text, nullable=False))
    signed_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


def _table(model: type[SQLModel]) -> Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


head_table = _table(LedgerHead)
entry_table = _table(LedgerEntryRow)
party_table = _table(LedgerParty)
node_table = _table(LedgerNode)
checkpoint_table = _table(LedgerCheckpointRow)
LEDGER_TABLES = (head_table, entry_table, party_table, node_table, checkpoint_table)

HEAD_ID = 1

QUERY_COLUMNS = (
    "record_id",
    "recorded_at",
    "action",
    "actor_principal",
    "actor_organisation",
    "data_owner",
    "job_id",
    "decision_allowed",
)


def query_columns(document: dict[str, Any]) -> dict[str, Any]:
    """The query columns of an entry, derived from its parsed JSON (never from anything else),
    in the order of :data:`QUERY_COLUMNS`."""
    actor = document.get("actor") or {}
    resource = document.get("resource") or {}
    decision = document.get("decision") or {}
    return {
        "record_id": document.get("record_id"),
        "recorded_at": document.get("time"),
        "action": document.get("action"),
        "actor_principal": actor.get("principal"),
        "actor_organisation": actor.get("organisation"),
        "data_owner": resource.get("owner"),
        "job_id": document.get("job_id"),
        "decision_allowed": decision.get("allowed"),
    }


def parties(document: dict[str, Any]) -> set[str]:
    """The companies an entry involves: the actor's organisation, the data owner, participants."""
    actor = document.get("actor") or {}
    resource = document.get("resource") or {}
    participants = document.get("participants")
    involved = {actor.get("organisation"), resource.get("owner")}
    if isinstance(participants, list):
        involved.update(participants)
    return {company for company in involved if isinstance(company, str)}


def parse_entry_json(entry: bytes | str) -> dict[str, Any]:
    document = json.loads(entry)
    if not isinstance(document, dict):
        raise ValueError("an entry is a JSON object")
    return document


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


@contextmanager
def read_snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection whose reads all see one consistent state of the database."""
    with engine.connect() as conn:
        if is_sqlite(engine):
            conn.exec_driver_sql("BEGIN")  # in WAL mode, one read transaction is one snapshot
        else:
            conn.execution_options(isolation_level="REPEATABLE READ")
        try:
            yield conn
        finally:
            conn.rollback()


@contextmanager
def write_lock(engine: Engine) -> Iterator[tuple[Connection, int]]:
    """A transaction holding the ledger's write lock; yields it and the committed size.

    Every append and every checkpoint runs inside this lock, so writers are serialised across
    threads and processes: SQLite by ``BEGIN IMMEDIATE`` (the database write lock, waited for
    up to the busy timeout), Postgres by a row lock on the head row. The transaction commits
    when the block ends and rolls back on any error. On SQLite the ledger's commits are
    synced to disk (``synchronous=FULL``): an action that was allowed must not lose its
    record to a power cut.
    """
    with engine.connect() as conn:
        restore_synchronous: int | None = None
        try:
            if is_sqlite(engine):
                restore_synchronous = conn.exec_driver_sql("PRAGMA synchronous").scalar_one()
                conn.exec_driver_sql("PRAGMA synchronous=FULL")
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            size = conn.execute(
                select(head_table.c.size).where(head_table.c.id == HEAD_ID).with_for_update()
            ).scalar_one_or_none()
            if size is None:
                raise LedgerIntegrityError("the ledger's head row is missing")
            yield conn, size
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            if restore_synchronous is not None:
                try:
                    conn.exec_driver_sql(f"PRAGMA synchronous={int(restore_synchronous)}")
                except SQLAlchemyError:
                    # Keep the error that got us here; retire the connection, whose setting
                    # could not be put back, instead of pooling it.
                    conn.invalidate()


def fetch_nodes(conn: Connection, node_ids: Iterable[NodeId]) -> dict[NodeId, bytes]:
    """The stored hashes of perfect subtrees; level 0 is an entry's leaf hash. A missing one
    raises :class:`LedgerIntegrityError`."""
    wanted = set(node_ids)
    leaves = sorted(index for level, index in wanted if level == 0)
    inner = sorted(node for node in wanted if node[0] > 0)
    found: dict[NodeId, bytes] = {}
    if leaves:
        rows = conn.execute(
            select(entry_table.c.idx, entry_table.c.leaf_hash).where(entry_table.c.idx.in_(leaves))
        )
        found.update(((0, row.idx), row.leaf_hash) for row in rows)
    if inner:
        by_level: dict[int, list[int]] = {}
        for level, index in inner:
            by_level.setdefault(level, []).append(index)
        # One equality-and-IN clause per level: both SQLite and Postgres search the primary
        # key for each (a row-value IN over (level, idx) makes SQLite scan the whole table).
        condition = or_(
            *(
                and_(node_table.c.level == level, node_table.c.idx.in_(indices))
                for level, indices in by_level.items()
            )
        )
        rows = conn.execute(
            select(node_table.c.level, node_table.c.idx, node_table.c.hash).where(condition)
        )
        found.update(((row.level, row.idx), row.hash) for row in rows)
    missing = wanted - found.keys()
    if missing:
        level, index = min(missing)
        raise LedgerIntegrityError(f"stored tree node (level {level}, index {index}) is missing")
    return found


def span_hashes(conn: Connection, spans: list[Span]) -> list[bytes]:
    """The RFC 6962 hashes of ``spans``, from stored nodes fetched in one go."""
    nodes = fetch_nodes(conn, nodes_for(spans))
    return [span_hash(span, nodes) for span in spans]


def tree_at(conn: Connection, size: int) -> CompactRange:
    """The compact range of the tree of ``size`` leaves, from stored nodes."""
    return CompactRange.load(size, lambda node_ids: fetch_nodes(conn, node_ids))
