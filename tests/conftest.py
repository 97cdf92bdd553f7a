"""Shared fixtures: an isolated sandbox home per test, on SQLite or on PostgreSQL.

Set ``SANDBOX_TEST_DATABASE=postgres`` to run every database-backed test on a fresh
PostgreSQL database (created from ``SANDBOX_TEST_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``, and dropped afterwards).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.config import Settings, load_settings
from sandbox.db import dispose_engines, get_engine

POSTGRES_ADMIN_URL = os.environ.get(
    "SANDBOX_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _pg_admin():  # type: ignore[no-untyped-def]
    import psycopg

    try:
        return psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}. Start it with "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
        )


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    name = f"sandbox_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        dispose_engines()
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def use_postgres() -> bool:
    return os.environ.get("SANDBOX_TEST_DATABASE", "sqlite").lower() in ("postgres", "postgresql")


@pytest.fixture
def sandbox_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Settings:
    """Settings pointing at a new home folder and a new database (SQLite file by default)."""
    home = tmp_path / "home"
    monkeypatch.setenv("SANDBOX_HOME", str(home))
    if use_postgres():
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{home / 'sandbox.db'}"
    monkeypatch.setenv("SANDBOX_DATABASE_URL", url)
    settings = load_settings()
    yield settings
    dispose_engines()


@pytest.fixture
def engine(sandbox_home: Settings):  # type: ignore[no-untyped-def]
    return get_engine(sandbox_home.database_url)
