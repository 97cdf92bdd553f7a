"""``sandbox principal`` and ``sandbox token``: the operator's principals and their keys, and
API tokens."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from sandbox import identity
from sandbox.cli.render import console, err, fail, governance
from sandbox.errors import SandboxError
from sandbox.identity.requests import sign_token_request
from sandbox.services import principals as principal_service

principal_app = typer.Typer(
    help="The operator: principals of the API (engineers, regulators, operators) and their keys.",
    no_args_is_help=True,
)
token_app = typer.Typer(
    help="API tokens: issue, revoke, sign a token request.", no_args_is_help=True
)


def _public_key_of(
    public_key: str | None, key_file: Path | None, new_key: Path | None
) -> tuple[str, Any]:
    """The public key to register, and a new private key to write once all else is valid."""
    given = [v for v in (public_key, key_file, new_key) if v is not None]
    if len(given) != 1:
        fail("give exactly one of --public-key, --key-file or --new-key")
    if public_key is not None:
        return public_key, None
    if key_file is not None:
        try:
            return identity.public_b64(identity.read_private_key(key_file)), None
        except identity.KeyFileError as exc:
            fail(str(exc))
    assert new_key is not None
    if new_key.exists():
        fail(f"{new_key} exists already; choose a new path for the new private key")
    key = identity.generate_key()
    return identity.public_b64(key), key


@principal_app.command("add")
def principal_add(
    principal_id: str = typer.Argument(..., help="Short id, e.g. reg-anna"),
    role: str = typer.Option(..., "--role", help="engineer, regulator or operator"),
    public_key: str | None = typer.Option(None, "--public-key", help="base64 Ed25519 key"),
    key_file: Path | None = typer.Option(None, "--key-file", help="the principal's PEM key"),
    new_key: Path | None = typer.Option(
        None, "--new-key", help="make a new key pair; write the private key here"
    ),
    organisation: str | None = typer.Option(None, "--organisation"),
    endorsement_file: Path | None = typer.Option(
        None,
        "--endorsement",
        help="a regulator's key record from `sandbox regulator endorse` (JSON), made on the "
        "installation regulator's machine",
    ),
) -> None:
    """Register a principal with its public key, as the operator (decided and recorded). A
    refused registration leaves nothing behind: a new private key is written only once every
    input is valid, and removed again if the registration is refused."""
    gov = governance()
    key, private = _public_key_of(public_key, key_file, new_key)
    try:
        endorsement = None
        if endorsement_file is not None:
            endorsement = json.loads(endorsement_file.read_text(encoding="utf-8"))
        principal_service.check_registration(principal_id, role, key, organisation)
        if private is not None and new_key is not None:
            identity.write_private_key(new_key, private)
        added = principal_service.register_principal(
            gov, principal_service.operator(gov), principal_id, role, key, organisation,
            endorsement,
        )  # fmt: skip
    except (SandboxError, ValueError, OSError) as exc:
        if private is not None and new_key is not None:
            new_key.unlink(missing_ok=True)
        fail(str(exc))
    if private is not None:
        console.print(f"New private key written to {new_key} (0600); keep it to yourself.")
    console.print(f"{added.role} [bold]{added.id}[/] registered with key {key}")


@principal_app.command("list")
def principal_list() -> None:
    """The registered principals (companies are principals by joining), read as the
    operator."""
    gov = governance()
    try:
        found = principal_service.list_principals(gov, principal_service.operator(gov))
    except SandboxError as exc:
        fail(str(exc))
    table = Table("principal", "role", "organisation", "status", "public key")
    for p in found:
        table.add_row(p.id, p.role, p.organisation or "", p.status, p.public_key)
    console.print(table)


@principal_app.command("disable")
def principal_disable(principal_id: str = typer.Argument(...)) -> None:
    """Disable a principal and revoke its tokens, as the operator."""
    gov = governance()
    try:
        disabled = principal_service.disable_principal(
            gov, principal_service.operator(gov), principal_id
        )
    except (SandboxError, ValueError) as exc:
        fail(str(exc))
    console.print(f"{disabled.role} {disabled.id} disabled; its tokens are revoked")


# ------------------------------------------------------------------------- tokens
@token_app.command("issue")
def token_issue(
    principal_id: str = typer.Argument(..., help="A principal or company id"),
    role: str = typer.Option(..., "--role", help="company, engineer, regulator or operator"),
    ttl_hours: float = typer.Option(8.0, "--ttl-hours", min=0.01, max=720),
) -> None:
    """Issue a token on the sandbox's own machine (tests, demos); it is printed once."""
    gov = governance()
    principal_service.ensure_operator(gov)
    try:
        issued = principal_service.issue_token_locally(
            gov, role, principal_id, timedelta(hours=ttl_hours)
        )
    except (SandboxError, ValueError) as exc:
        fail(str(exc))
    err.print(
        f"token {issued.record.id} for {role} {principal_id}, expires {issued.record.expires_at:%Y-%m-%d %H:%M} UTC"
    )
    typer.echo(issued.token)


@token_app.command("revoke")
def token_revoke(token_id: str = typer.Argument(..., help="The token's id (tok-...)")) -> None:
    """Revoke a token, as the operator."""
    gov = governance()
    try:
        principal_service.revoke_token(gov, principal_service.operator(gov), token_id)
    except (SandboxError, ValueError) as exc:
        fail(str(exc))
    console.print(f"token {token_id} revoked")


@token_app.command("sign-request")
def token_sign_request(
    key_file: Path = typer.Option(..., "--key", help="your Ed25519 private key (PEM)"),
    principal_id: str = typer.Option(..., "--id"),
    role: str = typer.Option(..., "--role"),
    ttl_hours: float = typer.Option(8.0, "--ttl-hours", min=0.02, max=720),
) -> None:
    """Print a signed token request, the body of POST /auth/token (valid for 5 minutes)."""
    try:
        key = identity.read_private_key(key_file)
    except identity.KeyFileError as exc:
        fail(str(exc))
    body = sign_token_request(key, role, principal_id, ttl_seconds=int(ttl_hours * 3600))
    typer.echo(json.dumps(body))
