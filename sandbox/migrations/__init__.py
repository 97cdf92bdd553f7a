"""Schema migrations (Alembic) for the production store, PostgreSQL.

``upgrade(engine)`` brings a database to the newest revision; ``sandbox db upgrade`` and
``alembic upgrade head`` (with the repository's ``alembic.ini``) do the same from a shell.
A new revision after a model change: ``alembic revision --autogenerate -m "what changed"``
against a database at head, then read and tidy the generated file. The test
``tests/registry/test_migrations.py`` fails while the models and the revisions disagree.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

MIGRATIONS_DIR = Path(__file__).resolve().parent
# pg_advisory_xact_lock key: processes that start together (API, coordinator, CLI) migrate once.
_LOCK_KEY = 0x5A4D_B0C5


class SchemaError(RuntimeError):
    """The database's schema cannot be brought to the models' revision safely."""


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate the database behind ``engine`` to ``revision``; returns (before, after).

    Refuses a database that holds tables but no migration history (created some other way):
    stamping it would hide any difference between its tables and the revisions.
    """
    config = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        before = current_revision(connection)
        target = ScriptDirectory.from_config(config).get_current_head()
        if before is None:
            tables = set(inspect(connection).get_table_names()) - {"alembic_version"}
            if tables:
                raise SchemaError(
                    f"the database holds tables ({', '.join(sorted(tables)[:5])}…) but no "
                    "migration history; use an empty database, or compare and stamp it "
                    "with alembic by hand"
                )
        if revision == "head" and before == target:
            return before, before
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        return before, current_revision(connection)
