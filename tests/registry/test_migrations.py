"""PostgreSQL's schema comes from the Alembic revisions, and they match the models."""

from __future__ import annotations

import threading

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlmodel import SQLModel
from typer.testing import CliRunner

from sandbox.cli import app
from sandbox.db import _import_models, get_engine, normalise_url
from sandbox.migrations import (
    SchemaError,
    alembic_config,
    current_revision,
    head_revision,
    upgrade,
)

pytestmark = pytest.mark.postgres


def schema_differences(url: str) -> list[object]:
    _import_models()
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, SQLModel.metadata))
    finally:
        engine.dispose()


def test_migrations_at_head_give_the_models_schema(pg_url: str) -> None:
    engine = get_engine(pg_url)  # a Postgres engine migrates on first use
    with engine.connect() as connection:
        assert current_revision(connection) == head_revision()
    assert schema_differences(pg_url) == []
    tables = set(inspect(engine).get_table_names())
    assert tables == set(SQLModel.metadata.tables) | {"alembic_version"}


def test_down_to_nothing_and_up_again(pg_url: str) -> None:
    engine = create_engine(normalise_url(pg_url))
    try:
        assert upgrade(engine) == (None, head_revision())
        assert upgrade(engine) == (head_revision(), head_revision())
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        assert upgrade(engine) == (None, head_revision())
    finally:
        engine.dispose()
    assert schema_differences(pg_url) == []


def test_processes_starting_together_migrate_once(pg_url: str) -> None:
    engines = [create_engine(normalise_url(pg_url)) for _ in range(4)]
    outcomes: list[object] = []
    barrier = threading.Barrier(len(engines))

    def start(engine) -> None:  # type: ignore[no-untyped-def]
        barrier.wait()
        try:
            outcomes.append(upgrade(engine))
        except Exception as exc:  # the assertion below names it
            outcomes.append(exc)

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for engine in engines:
        engine.dispose()
    head = head_revision()
    assert sorted(outcomes, key=str) == sorted([(None, head)] + [(head, head)] * 3, key=str)


def test_a_database_made_some_other_way_is_not_adopted_silently(pg_url: str) -> None:
    engine = create_engine(normalise_url(pg_url))
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE company (id text primary key)"))
        with pytest.raises(SchemaError, match="no migration history"):
            upgrade(engine)
    finally:
        engine.dispose()


def test_the_db_commands(pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())

    monkeypatch.setenv("SANDBOX_DATABASE_URL", pg_url)
    assert "revision none" in run("db", "current")
    done = run("db", "upgrade")
    assert f"migrated from an empty database to {head_revision()}" in done
    assert "postgres@" not in done  # where, never who
    assert "already at revision" in run("db", "upgrade")
    assert "up to date" in run("db", "current")
    monkeypatch.setenv("SANDBOX_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    assert "Nothing to do" in run("db", "upgrade")
