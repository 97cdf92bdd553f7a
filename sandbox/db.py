"""The database: SQLModel over a SQLite file (the default) or PostgreSQL (by URL).

One engine per URL per process. SQLite runs in WAL mode with a busy timeout so that several
processes (the API, the coordinator, the CLI) can share the file safely.

Schema: the embedded SQLite file is created from the models (``create_all``); PostgreSQL,
the production store, is brought to the newest Alembic revision (``sandbox/migrations``) on
first use, under an advisory lock so that processes starting together migrate once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine

_engines: dict[str, Engine] = {}
_lock = threading.Lock()
_dispose_hooks: list[Callable[[], None]] = []


def on_dispose(hook: Callable[[], None]) -> None:
    """Run ``hook`` whenever the engines are disposed (caches built on them must go too)."""
    _dispose_hooks.append(hook)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def normalise_url(url: str) -> str:
    # Plain postgresql:// URLs mean the psycopg 3 driver (the one we install).
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://") :]
    return url


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def get_engine(url: str) -> Engine:
    """The process-wide engine for ``url``; its schema is created or migrated on first use."""
    url = normalise_url(url)
    with _lock:
        engine = _engines.get(url)
        if engine is not None:
            return engine
        if is_sqlite(url):
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
            _import_models()
            SQLModel.metadata.create_all(engine)
        else:
            from sandbox.migrations import upgrade

            engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
            _import_models()
            upgrade(engine)
        _engines[url] = engine
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (tests and forked workers call this)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
    for hook in _dispose_hooks:
        hook()


def _import_models() -> None:
    """Import every module that declares tables so that ``create_all`` and the migrations
    (``sandbox/migrations/env.py``) see them."""
    import sandbox.ledger.store
    import sandbox.registry  # noqa: F401


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
