"""The services connect to PostgreSQL as a least-privileged application role.

``sandbox db upgrade --app-role`` migrates as the owner and sets the role up. As that role,
the sandbox works (a company joins, a job is filed and decided, checkpoints are signed and
cosigned, the ledger verifies), while rewriting the ledger in place, emptying it, changing
the schema or the migration revision is refused by the database itself."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from policies.facts import EngineerFacts, OperatorFacts
from sandbox import identity
from sandbox.cli import app
from sandbox.config import load_settings
from sandbox.db import dispose_engines
from sandbox.governance import Governance
from sandbox.migrations.roles import RoleError, grant_application_role
from sandbox.protocol.jobspec import JobSpec
from sandbox.services import jobs as job_service
from sandbox.services import principals as principal_service
from tests.api.conftest import PURPOSE, join_census
from tests.conftest import _postgres_admin_url, fresh_postgres_database


@dataclass
class Database:
    owner_url: str
    app_url: str
    role: str


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    role = f"sandbox_app_{uuid.uuid4().hex[:8]}"
    password = tmp_path / "app-password"
    password.write_text("not-the-owners-password\n")
    try:
        with fresh_postgres_database() as owner_url:
            monkeypatch.setenv("SANDBOX_DATABASE_URL", owner_url)
            result = CliRunner().invoke(app, ["db", "upgrade", "--app-role", role,
                                              "--app-password-file", str(password)])  # fmt: skip
            assert result.exit_code == 0, result.output
            assert f"application role {role}" in result.output
            app_url = make_url(owner_url).set(username=role, password="not-the-owners-password")
            yield Database(owner_url, app_url.render_as_string(hide_password=False), role)
            dispose_engines()
    finally:
        with psycopg.connect(_postgres_admin_url(), autocommit=True) as admin:
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def as_application(database: Database, home: Path, monkeypatch: pytest.MonkeyPatch) -> Governance:
    monkeypatch.setenv("SANDBOX_DATABASE_URL", database.app_url)
    monkeypatch.setenv("SANDBOX_HOME", str(home))
    return Governance(load_settings())


def test_the_sandbox_works_as_the_application_role(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gov = as_application(database, tmp_path / "home", monkeypatch)
    settings = gov.settings
    for company in ("construction", "transportation"):
        join_census(gov, settings, company)
    principal_service.register_principal(gov, OperatorFacts("operator"), "eve", "engineer",
                                         identity.public_b64(identity.generate_key()))  # fmt: skip
    spec = JobSpec.model_validate({"purpose": PURPOSE, "companies": ["construction", "transportation"],
                                   "rounds": 2, "privacy": {"dp": {"epsilon": 2.0}}})  # fmt: skip
    filed = job_service.file_job(gov, spec, EngineerFacts("eve"))
    assert filed.job.status == "admitted", filed.reasons
    signed = gov.ledger.checkpoint()
    assert signed.size == gov.ledger.size > 10
    assert gov.ledger.verify().ok


@pytest.mark.parametrize(
    "attack",
    [
        "UPDATE ledger_entry SET entry = 'rewritten' WHERE idx = 0",
        "DELETE FROM ledger_node",
        "DELETE FROM ledger_entry",
        "TRUNCATE ledger_party",
        "UPDATE ledger_party SET company = 'someone-else'",
        "ALTER TABLE ledger_entry ADD COLUMN note text",
        "DROP TABLE ledger_checkpoint",
        "CREATE TABLE shadow (x int)",
        "UPDATE alembic_version SET version_num = '0001'",
        "DELETE FROM ledger_checkpoint",
        "UPDATE ledger_checkpoint SET size = size + 1",
        "UPDATE ledger_checkpoint SET signed_at = now()",
        "UPDATE ledger_head SET id = 2",
    ],
)
def test_the_application_role_cannot_rewrite_the_ledger_or_the_schema(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attack: str
) -> None:
    gov = as_application(database, tmp_path / "home", monkeypatch)
    gov.ledger.checkpoint()
    url = make_url(database.app_url).set(drivername="postgresql")
    with (
        psycopg.connect(url.render_as_string(hide_password=False)) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(attack)
    assert gov.ledger.verify().ok


def test_the_password_is_stored_as_a_scram_verifier_and_memberships_are_dropped(
    database: Database,
) -> None:
    from sqlalchemy import create_engine

    with psycopg.connect(_postgres_admin_url(), autocommit=True) as admin:
        admin.execute(f'GRANT pg_read_all_data TO "{database.role}"')
        engine = create_engine(database.owner_url)
        try:
            grant_application_role(engine, database.role, "a-new-password")
        finally:
            engine.dispose()
        stored = admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                               (database.role,)).fetchone()  # fmt: skip
        groups = admin.execute(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
            "WHERE r.rolname = %s", (database.role,)
        ).fetchone()  # fmt: skip
    assert stored is not None and str(stored[0]).startswith("SCRAM-SHA-256$4096:")
    assert "a-new-password" not in str(stored[0])
    assert groups == (0,)


def test_the_role_is_checked_before_anything_is_granted(database: Database) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(database.owner_url)
    try:
        for role, password, problem in (
            ('app"; DROP TABLE ledger_entry; --', "x", "not a plain role name"),
            ("sandbox_app_x", "", "needs a password"),
            (str(make_url(database.owner_url).username), "x", "is the owner role"),
        ):
            with pytest.raises(RoleError, match=problem):
                grant_application_role(engine, role, password)
    finally:
        engine.dispose()
