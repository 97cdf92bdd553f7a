"""``sandbox federation`` at a company: make and record the SuperNode's key, a demo
company's side of a deployment, and becoming the company's SuperNode."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from sandbox.cli.federation import CA_OPTION, console, fail, federation_app
from sandbox.cli.render import governance
from sandbox.config import load_settings
from sandbox.errors import SandboxError
from sandbox.identity import KeyFileError, pki
from sandbox.node.home import NodeHome
from sandbox.node.pins import pin
from sandbox.runtime.federation import commands, local, registration
from sandbox.services import nodes as node_service
from sandbox.services import principals as principal_service


def _rotate_node_key(node: NodeHome, company_id: str, record: Callable[[str], object]) -> str:
    """A new node key beside the old one; ``record`` (the registry) accepts it before it
    replaces the old one, so a refusal leaves the old, registered key in place."""
    path = node.node_auth_key_path
    fresh = path.with_name(path.name + ".new")
    fresh.unlink(missing_ok=True)
    pki.public_key_path(fresh).unlink(missing_ok=True)
    public = pki.generate_node_auth_key(fresh, f"{company_id} node")
    try:
        record(public)
    except BaseException:
        fresh.unlink(missing_ok=True)
        pki.public_key_path(fresh).unlink(missing_ok=True)
        raise
    os.replace(fresh, path)
    os.replace(pki.public_key_path(fresh), pki.public_key_path(path))
    return public


@federation_app.command("node-key")
def node_key(
    company_id: str = typer.Argument(...),
    node_dir: Path | None = typer.Option(
        None, "--node-dir", help="The company's node folder (default: SANDBOX_HOME/companies/ID)."
    ),
    replace: bool = typer.Option(False, "--replace", help="Rotate: a new key replaces the old."),
    record: bool = typer.Option(
        True,
        "--record/--no-record",
        help="Record the public half in the registry (--no-record: at a company's own "
        "machine, which has no database; send the printed line to the operator).",
    ),
    public_key: Path | None = typer.Option(
        None, "--public-key", help="Operator: record this public key file a company sent."
    ),
) -> None:
    """Make the company's SuperNode key at its node (once) and record its public half (as
    the operator: decided and recorded)."""
    settings = load_settings()
    node = NodeHome(node_dir or settings.company_dir(company_id))
    path = node.node_auth_key_path
    try:
        if public_key is not None:
            gov = governance()
            stored = node_service.record_node_key(
                gov,
                principal_service.operator(gov),
                company_id,
                public_key.read_text(),
                replace=replace,
            )
            console.print(f"{company_id}: node key {stored.fingerprint} recorded")
            return
        if not record:
            if replace and path.exists():
                public = _rotate_node_key(node, company_id, lambda _: None)
            elif path.exists():
                public = pki.read_node_private_key_public_line(path)
            else:
                public = pki.generate_node_auth_key(path, f"{company_id} node")
            console.print(f"{company_id}: node key {pki.node_key_fingerprint(public)} ({path})")
            console.print(f"{public} {company_id}", highlight=False, soft_wrap=True)
            return
        gov = governance()
        operator = principal_service.operator(gov)

        def record_key(line: str) -> object:
            return node_service.record_node_key(gov, operator, company_id, line, replace=True)

        if replace and path.exists():
            _rotate_node_key(node, company_id, record_key)
        elif replace:
            record_key(pki.generate_node_auth_key(path, f"{company_id} node"))
        else:
            registration.ensure_node_key(gov, company_id, node)
        stored = node_service.node_key(gov, operator, company_id)
    except (commands.FederationError, SandboxError, KeyFileError, pki.PkiError, OSError) as exc:
        fail(str(exc))
    console.print(f"{company_id}: node key {stored.fingerprint} ({path})")


@federation_app.command("demo-company")
def demo_company(
    industry: str = typer.Argument(..., help="A Census industry, e.g. 'Retail trade'."),
    api: str = typer.Option(..., "--api", help="The sandbox's API, e.g. http://api:8000."),
    node_keys: Path = typer.Option(
        ..., "--node-keys", help="Leave the node's public key here, for the operator."
    ),
    rows: int = typer.Option(300, "--rows", min=20, help="Sample this many rows."),
    purpose: list[str] = typer.Option([], "--purpose", help="Grant consent (repeatable)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """A demo company's side of a deployment, once: prepare its node here (vault, keys; the
    rows stay here), apply to join through the API with a request signed by its key (its
    node records the consents it grants), and leave its SuperNode's public key for the
    operator, who admits it. A company that has applied is kept."""
    from sandbox.data import census
    from sandbox.identity.requests import join_request
    from sandbox.node.home import LocalConsent
    from sandbox.node.onboarding import prepare_node, remove_node

    settings = load_settings()
    if industry not in census.industries():
        fail(f"unknown industry {industry!r}; choose one of: {', '.join(census.industries())}")
    company_id = census.slug(industry)
    node = NodeHome(settings.company_dir(company_id))
    if node.info_path.exists():
        console.print(f"{company_id} has already applied; its node folder is kept")
    else:
        created = not node.folder.exists()
        try:
            key, filled = prepare_node(
                node.folder, company_id, census.company_table(industry, rows=rows, seed=seed), seed
            )
            body, signature = join_request(
                key, company_id, industry, filled.industry, filled, tuple(purpose)
            )
            joined = _post_join(api, body, signature)
            keys = joined["sandbox_keys"]
            pin(node.folder, keys["operator"], keys["regulator"])
            console.print(
                f"{company_id} pinned the sandbox's keys: operator "
                f"{keys['operator_fingerprint']}, regulator {keys['regulator_fingerprint']}"
            )
            for consent in joined["consents"]:  # the company's own grant, on its premises
                node.record_grant(
                    LocalConsent(
                        consent["id"],
                        filled.name,
                        consent["purpose"],
                        datetime.fromisoformat(consent["expires_at"]),
                    )
                )
        except (SandboxError, ValueError, OSError) as exc:
            remove_node(node.folder, created)
            fail(str(exc))
        console.print(
            f"{company_id} applied to join with {filled.row_count} rows through {api}; the "
            "operator admits it (`sandbox company admit`, or `federation register --admit`)"
        )
    try:
        path = node.node_auth_key_path
        if path.exists():
            public = pki.read_node_private_key_public_line(path)
        else:
            public = pki.generate_node_auth_key(path, f"{company_id} node")
        node_keys.mkdir(parents=True, exist_ok=True)
        (node_keys / f"{company_id}.pub").write_text(f"{public}\n")
    except (KeyFileError, pki.PkiError, OSError) as exc:
        fail(str(exc))
    console.print(f"{company_id}: node key {pki.node_key_fingerprint(public)} ({path})")


def _post_join(api: str, body: bytes, signature: str) -> dict[str, Any]:
    """POST a signed join request; the API's answer, or a ValueError with its problem."""
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        api.rstrip("/") + "/companies",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "X-Sandbox-Signature": signature},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return dict(json.load(answer))
    except urllib.error.HTTPError as exc:
        problem = exc.read().decode("utf-8", "replace")[:2000]
        raise ValueError(f"the sandbox refused the join ({exc.code}): {problem}") from exc


@federation_app.command("node")
def node_cmd(
    company_id: str = typer.Argument(...),
    superlink: str = typer.Option(
        f"{commands.LOOPBACK}:{commands.DEFAULT_PORT}", "--superlink", help="SuperLink host:port."
    ),
    ca: Path | None = CA_OPTION,
    node_dir: Path | None = typer.Option(
        None, "--node-dir", help="The company's node folder (default: SANDBOX_HOME/companies/ID)."
    ),
    port: int = typer.Option(9094, "--port", min=1, max=65535, help="The node's local API port."),
) -> None:
    """Become the company's SuperNode (its vault, its node key, the sandbox CA only)."""
    settings = load_settings()
    node = NodeHome(node_dir or settings.company_dir(company_id))
    ca_cert = ca or local.ca_cert_path(settings)
    try:
        if node.company_id != company_id:
            fail(f"{node.folder} is the node folder of {node.company_id}, not {company_id}")
        pki.read_node_private_key_public_line(node.node_auth_key_path)
    except FileNotFoundError:
        fail(f"{node.folder} holds no company node; join first")
    except KeyFileError as exc:
        fail(str(exc))
    if not ca_cert.exists():
        fail(f"the CA certificate {ca_cert} does not exist")
    home = node.folder / "flwr"  # Flower's state at the node: installed app bundles
    home.mkdir(parents=True, exist_ok=True)
    argv = commands.supernode_argv(superlink, ca_cert, node, company_id, port)
    os.execve(argv[0], argv, commands.flower_env(home, database=False))


@federation_app.command("node-health")
def node_health(
    company_id: str = typer.Argument(...),
    node_dir: Path | None = typer.Option(
        None, "--node-dir", help="The company's node folder (default: SANDBOX_HOME/companies/ID)."
    ),
) -> None:
    """Exit 0 when the company's SuperNode is connected to the SuperLink and authenticated by
    it (a health check; the node process writes this once the SuperLink accepted its key)."""
    from sandbox.runtime.federation.node import is_connected

    folder = node_dir or load_settings().company_dir(company_id)
    if not is_connected(folder):
        fail(f"{company_id}'s SuperNode is not connected to the SuperLink (yet)")
    console.print(f"{company_id}'s SuperNode is connected and authenticated")
