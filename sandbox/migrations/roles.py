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

import base64
import hashlib
import hmac
import os
import re

from sqlalchemy import text
from sqlalchemy.engine import Engine

APPEND_ONLY = ("ledger_entry", "ledger_node", "ledger_party")
"""Ledger tables the application role may only read and insert into."""
ADVANCED = {"ledger_head": ("size", "updated_at"), "ledger_checkpoint": ("note",)}
"""Ledger tables it may also update, in these columns only: the head's size, and a signed
checkpoint's note (which takes later cosignatures; its size, root and time stay)."""
READ_ONLY = ("alembic_version",)
_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class RoleError(ValueError):
    """The application role cannot be set up as asked."""


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of ``password`` (RFC 5802, RFC 7677), which the
    server stores as is."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    encode = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{encode(salt).decode()}$"
            f"{encode(stored_key).decode()}:{encode(server_key).decode()}")  # fmt: skip


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
        # Identifiers cannot be bound; the name is checked above. The password travels as a
        # SCRAM verifier, never in clear (statement logs would keep it).
        quoted = conn.execute(
            text("SELECT quote_literal(:p)"), {"p": scram_verifier(password)}
        ).scalar_one()
        # (Sent as is: the verifier's colons are not bind parameters.)
        conn.exec_driver_sql(f'{verb} ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                             f"NOREPLICATION NOBYPASSRLS INHERIT PASSWORD {quoted}")  # fmt: skip
        memberships = conn.execute(text(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = :r"
        ), {"r": role}).scalars().all()  # fmt: skip
        for group in memberships:  # no privilege through another role
            conn.execute(text(f'REVOKE "{group}" FROM "{role}"'))
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
                rights = f"SELECT, INSERT, UPDATE ({', '.join(ADVANCED[table])})"
            elif table in READ_ONLY:
                rights = "SELECT"
            else:
                rights = "SELECT, INSERT, UPDATE, DELETE"
            conn.execute(text(f'GRANT {rights} ON "{table}" TO "{role}"'))
            granted.append(f"{table}: {rights}")
        conn.execute(text(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"'))
    return granted
