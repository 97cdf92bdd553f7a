"""Alembic's entry point for the sandbox's schema (run by ``sandbox db upgrade`` or by
``alembic`` with the ``alembic.ini`` at the repository root).

The target is every SQLModel table the sandbox declares (``sandbox.db._import_models``), so
``alembic revision --autogenerate -m "..."`` writes the difference between the models and the
database named by ``SANDBOX_DATABASE_URL``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool
from sqlmodel import SQLModel

from sandbox.config import load_settings
from sandbox.db import _import_models, normalise_url

_import_models()
target_metadata = SQLModel.metadata
config = context.config


def _url() -> str:
    return normalise_url(config.get_main_option("sqlalchemy.url") or load_settings().database_url)


def run_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        compare_type=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        # The caller (sandbox.migrations.upgrade) holds the connection and its transaction.
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
