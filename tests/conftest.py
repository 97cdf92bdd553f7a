"""Shared fixtures: an isolated sandbox home per test, on SQLite or on PostgreSQL.

Set ``SANDBOX_TEST_DATABASE=postgres`` to run every database-backed test on a fresh
PostgreSQL database (created through ``SANDBOX_TEST_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``, and dropped afterwards).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine, make_url

from sandbox.config import Settings, load_settings
from sandbox.db import dispose_engines, get_engine

DEFAULT_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _postgres_admin_url() -> str:
    return os.environ.get("SANDBOX_TEST_POSTGRES_URL", DEFAULT_POSTGRES_ADMIN_URL)


def use_postgres() -> bool:
    return os.environ.get("SANDBOX_TEST_DATABASE", "sqlite").lower() in ("postgres", "postgresql")


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """The URL of a new, empty Postgres database, dropped afterwards.

    The server is the one named by ``SANDBOX_TEST_POSTGRES_URL`` (an admin connection). An
    unreachable server fails the test, unless ``SANDBOX_SKIP_POSTGRES=1`` asks to skip.
    """
    with postgres_database() as url:
        yield url


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty Postgres database for as long as the block runs (see ``pg_url``)."""
    import psycopg
    from psycopg import sql

    admin_url = _postgres_admin_url()
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if os.environ.get("SANDBOX_SKIP_POSTGRES") == "1":
            pytest.skip(f"Postgres unreachable and SANDBOX_SKIP_POSTGRES=1: {exc}")
        pytest.fail(
            f"Postgres at {admin_url} is unreachable ({exc}). Start it with "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start, point "
            "SANDBOX_TEST_POSTGRES_URL at one, or set SANDBOX_SKIP_POSTGRES=1 to skip.",
            pytrace=False,
        )
    name = f"sandbox_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        try:
            yield url
        finally:
            dispose_engines()
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (see ``fresh_postgres_database``)."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def tmp_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings whose home (keys, database file) is a fresh temporary folder, on SQLite."""
    home = tmp_path / "home"
    monkeypatch.setenv("SANDBOX_HOME", str(home))
    monkeypatch.setenv("SANDBOX_DATABASE_URL", f"sqlite:///{home / 'sandbox.db'}")
    monkeypatch.delenv("SANDBOX_LEDGER_ORIGIN", raising=False)
    yield load_settings()
    dispose_engines()


@contextmanager
def isolated_home(home: Path) -> Iterator[Settings]:
    """Settings pointing at ``home`` and a new database (SQLite, or Postgres when
    ``SANDBOX_TEST_DATABASE=postgres``), the environment restored afterwards. For fixtures of
    wider scope than a test; a test's own fixture is ``sandbox_home``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SANDBOX_HOME", str(home))
        patch.delenv("SANDBOX_LEDGER_ORIGIN", raising=False)
        if use_postgres():
            with postgres_database() as url:
                patch.setenv("SANDBOX_DATABASE_URL", url)
                yield load_settings()
        else:
            patch.setenv("SANDBOX_DATABASE_URL", f"sqlite:///{home / 'sandbox.db'}")
            try:
                yield load_settings()
            finally:
                dispose_engines()


@pytest.fixture
def sandbox_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Settings]:
    """Settings pointing at a new home folder and a new database: a SQLite file by default,
    a fresh PostgreSQL database when ``SANDBOX_TEST_DATABASE=postgres``."""
    home = tmp_path / "home"
    monkeypatch.setenv("SANDBOX_HOME", str(home))
    monkeypatch.delenv("SANDBOX_LEDGER_ORIGIN", raising=False)
    if use_postgres():
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{home / 'sandbox.db'}"
    monkeypatch.setenv("SANDBOX_DATABASE_URL", url)
    yield load_settings()
    dispose_engines()


@pytest.fixture
def engine(sandbox_home: Settings) -> Engine:
    return get_engine(sandbox_home.database_url)


# The fixtures through which a test gets its database: under SANDBOX_TEST_DATABASE=postgres
# they hand out a fresh PostgreSQL database.
DATABASE_FIXTURES = frozenset({"sandbox_home", "pg_url", "world"})
DIRECT_DATABASE_CALLS = ("isolated_home(", "postgres_database(")


def touches_database(item: pytest.Item) -> bool:
    """Whether a test runs on the database the run names: it uses a database fixture, carries
    the ``postgres`` mark, or its module opens a database home itself."""
    if DATABASE_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    if item.get_closest_marker("postgres") is not None:
        return True
    path = Path(str(item.fspath))
    return path.name != "conftest.py" and any(
        call in _module_source(path) for call in DIRECT_DATABASE_CALLS
    )


_SOURCES: dict[Path, str] = {}


def _module_source(path: Path) -> str:
    if path not in _SOURCES:
        _SOURCES[path] = path.read_text()
    return _SOURCES[path]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The PostgreSQL run (``make test-postgres``) runs only the tests that use a database:
    the others would repeat the SQLite run's work exactly. They are deselected (reported as
    such), not skipped, and run in ``make test``."""
    if not use_postgres():
        return
    kept = [item for item in items if touches_database(item)]
    dropped = [item for item in items if not touches_database(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
