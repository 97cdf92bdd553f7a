"""The least-privileged database role the sandbox's services run as (PostgreSQL).

The owner role (the one ``sandbox db upgrade`` migrates with) owns the schema; the API, the
coordinator and the operator's commands connect as an *application role* that owns nothing:
it reads and writes the registry's tables, but the ledger's entries, tree nodes and parties
it may only read and append to (no UPDATE, DELETE or TRUNCATE), the head and checkpoints it
may append to and advance (a checkpoint's row takes later cosignatures), and it can neither
change the schema nor the migration revision. A service that is taken over cannot rewrite
what the ledger holds in place; it still cannot forge what the ledger signs either way,
because the signer checks its own memory and the witnesses check every checkpoint.
"""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.engine import Engine

APPEND_ONLY = ("ledger_entry", "ledger_node", "ledger_party")
"""Ledger tables the application role may only read and insert into."""
ADVANCED = ("ledger_head", "ledger_checkpoint")
"""Ledger tables it may also update (the head's size, a checkpoint's cosignatures)."""
READ_ONLY = ("alembic_version",)
_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class RoleError(ValueError):
    """The application role cannot be set up as asked."""


def grant_application_role(engine: Engine, role: str, password: str) -> list[str]:
    """Create (or update the password of) ``role`` and give it exactly the application's
    privileges on the current schema; the tables it was given each kind of right on."""
    if not _ROLE.match(role):
        raise RoleError(f"{role!r} is not a plain role name (a-z, 0-9, _)")
    if not password or "\x00" in password:
        raise RoleError("the application role needs a password")
    with engine.begin() as conn:
        owner = conn.execute(text("SELECT current_user")).scalar_one()
        if role == owner:
            raise RoleError(f"{role} is the owner role; the application role must be another")
        tables = [
            name
            for (name,) in conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            )
        ]
        missing = [t for t in (*APPEND_ONLY, *ADVANCED) if t not in tables]
        if missing:
            raise RoleError(f"the schema lacks {', '.join(missing)}: run `sandbox db upgrade`")
        exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role})
        verb = "ALTER" if exists.first() else "CREATE"
        # Identifiers cannot be bound; the name is checked above and the password is quoted
        # by the server's own quote_literal.
        quoted = conn.execute(text("SELECT quote_literal(:p)"), {"p": password}).scalar_one()
        conn.execute(text(f'{verb} ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                          f"PASSWORD {quoted}"))  # fmt: skip
        database = conn.execute(text("SELECT current_database()")).scalar_one()
        conn.execute(text(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"'))
        # Before PostgreSQL 15 every role may create in `public`: nobody but the owner may.
        conn.execute(text("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
        conn.execute(text(f'REVOKE CREATE ON SCHEMA public FROM "{role}"'))
        conn.execute(text(f'GRANT USAGE ON SCHEMA public TO "{role}"'))
        conn.execute(text(f'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{role}"'))
        granted: list[str] = []
        for table in sorted(tables):
            if table in APPEND_ONLY:
                rights = "SELECT, INSERT"
            elif table in ADVANCED:
                rights = "SELECT, INSERT, UPDATE"
            elif table in READ_ONLY:
                rights = "SELECT"
            else:
                rights = "SELECT, INSERT, UPDATE, DELETE"
            conn.execute(text(f'GRANT {rights} ON "{table}" TO "{role}"'))
            granted.append(f"{table}: {rights}")
        conn.execute(text(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"'))
    return granted
