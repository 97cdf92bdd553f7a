"""``sandbox db``: the schema of the production store (PostgreSQL) under Alembic."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from sandbox.config import load_settings
from sandbox.db import is_sqlite, normalise_url

db_app = typer.Typer(help="Database schema: migrations for PostgreSQL.", no_args_is_help=True)
console = Console()


def _where(url: str) -> str:
    """The database's host and name, never its credentials."""
    return url.rsplit("@", 1)[-1] if "@" in url else url.split("://", 1)[-1]


@db_app.command("upgrade")
def db_upgrade(
    revision: str = typer.Option("head", "--revision", help="Target revision (default: head)"),
    app_role: str | None = typer.Option(
        None,
        "--app-role",
        help="Then create or update this least-privileged role the services connect as "
        "(the ledger append-only to it, no schema changes).",
    ),
    app_password_file: Path | None = typer.Option(
        None, "--app-password-file", help="The application role's password (a secret's file)."
    ),
) -> None:
    """Migrate the database named by SANDBOX_DATABASE_URL (as its owner) to the newest
    schema, and with --app-role, set up the role the services connect as."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import SQLAlchemyError

    from sandbox.migrations import SchemaError, upgrade
    from sandbox.migrations.roles import RoleError, grant_application_role

    if (app_role is None) != (app_password_file is None):
        console.print("[bold red]error:[/] give --app-role and --app-password-file together")
        raise typer.Exit(1)

    url = normalise_url(load_settings().database_url)
    if is_sqlite(url):
        console.print(
            "The embedded SQLite store is created from the models on first use; "
            "migrations are for PostgreSQL. Nothing to do."
        )
        return
    engine = create_engine(url)
    try:
        before, after = upgrade(engine, revision)
        if before == after:
            console.print(f"{_where(url)}: already at revision {after}")
        else:
            console.print(
                f"{_where(url)}: migrated from {before or 'an empty database'} to {after}"
            )
        if app_role is not None and app_password_file is not None:
            password = app_password_file.read_text(encoding="utf-8").strip()
            granted = grant_application_role(engine, app_role, password)
            console.print(f"application role {app_role}: privileges on {len(granted)} tables "
                          "(the ledger append-only)")  # fmt: skip
    except (SchemaError, RoleError, OSError, SQLAlchemyError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()


@db_app.command("current")
def db_current() -> None:
    """The database's revision and the newest one."""
    from sqlalchemy import create_engine

    from sandbox.migrations import current_revision, head_revision

    url = normalise_url(load_settings().database_url)
    if is_sqlite(url):
        console.print("SQLite (embedded): the schema follows the models; no revisions.")
        return
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            current = current_revision(connection)
    finally:
        engine.dispose()
    head = head_revision()
    state = "up to date" if current == head else "behind: run `sandbox db upgrade`"
    console.print(f"{_where(url)}: revision {current or 'none'}, newest {head} ({state})")
