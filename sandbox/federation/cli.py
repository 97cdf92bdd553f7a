"""``sandbox federation``: Flower's deployment engine with TLS and node authentication.

On one machine: ``up`` / ``status`` / ``run`` / ``down``. Across machines (and in the
compose file) each piece runs on its own: ``certs`` (sandbox operator), ``superlink``
(coordinator host), ``node-key`` and ``node`` (each company), ``register`` and ``run``
(sandbox operator), ``ping`` (health checks).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import typer
from cryptography.hazmat.primitives import serialization
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sandbox import pki
from sandbox.config import load_settings
from sandbox.db import get_engine
from sandbox.federation import local, processes
from sandbox.federation.flwr_cli import FlwrCli, FlwrError
from sandbox.identity import KeyFileError
from sandbox.node import NodeHome
from sandbox.registry.errors import RegistryError

federation_app = typer.Typer(
    help="Flower's deployment engine: a SuperLink and one SuperNode per company, "
    "TLS from the sandbox CA, node authentication.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

SUPERLINK_OPTION = typer.Option(
    None,
    "--superlink",
    help="SuperLink address host:port (default: the local federation's).",
)
CA_OPTION = typer.Option(
    None, "--ca", help="The sandbox CA's certificate (default: SANDBOX_HOME/keys/tls-ca.crt)."
)


def fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


class Steps:
    """Each step of a long command on its own line, with the seconds since the start."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        console.print(f"[dim]{time.monotonic() - self.started:6.1f} s[/]  {text}")


def _connection(superlink: str | None, ca: Path | None) -> FlwrCli:
    settings = load_settings()
    if superlink is None:
        state = local.FederationState.load(local.FederationPaths.of(settings).state)
        if state is None or state.superlink is None:
            fail("no local federation is up; give --superlink host:port")
        assert state is not None
        superlink = state.address
    ca_cert = ca or local.ca_cert_path(settings)
    if not ca_cert.exists():
        fail(f"the CA certificate {ca_cert} does not exist; run `sandbox federation certs`")
    home = local.FederationPaths.of(settings).flwr_home(
        "cli-" + re.sub(r"[^A-Za-z0-9]+", "-", superlink)
    )
    return FlwrCli(
        Path(local.flower_program("flwr")), home, superlink, ca_cert, local.flower_env(home)
    )


def _fingerprint(cert_pem: bytes) -> str:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


# ----------------------------------------------------------------- operator
@federation_app.command("certs")
def certs(
    hostname: list[str] = typer.Option(
        [], "--hostname", help="A name the SuperLink is reached by (repeatable)."
    ),
    ip: list[str] = typer.Option(
        [], "--ip", help="An address the SuperLink is reached by (default 127.0.0.1, ::1)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="The SuperLink's TLS folder (default SANDBOX_HOME/federation/tls)."
    ),
    ca_dir: Path | None = typer.Option(
        None, "--ca-dir", help="The CA's folder (default SANDBOX_HOME/keys)."
    ),
    public_dir: Path | None = typer.Option(
        None, "--public-dir", help="Also put the CA certificate alone here (nodes, CLI)."
    ),
    force: bool = typer.Option(False, "--force", help="Issue a new server certificate."),
) -> None:
    """Create the sandbox CA (once) and issue the SuperLink's TLS certificate from it."""
    settings = load_settings()
    ca_folder = ca_dir or settings.keys_dir
    tls = pki.ServerTls(out or local.FederationPaths.of(settings).tls.folder)
    names = ["localhost", *hostname]
    addresses = ip or list(pki.DEFAULT_IPS)
    try:
        ca = pki.load_or_create_ca(ca_folder)
        if force or not tls.exists() or not set(names) | set(addresses) <= tls.names():
            pki.write_server_tls(ca, tls.folder, names, addresses)
            console.print(f"SuperLink certificate issued for {', '.join(names + addresses)}")
        else:
            console.print(f"SuperLink certificate in {tls.folder} already names them; kept")
        if public_dir is not None:
            pki.write_public_ca(ca, public_dir)
    except (pki.PkiError, KeyFileError, ValueError) as exc:
        fail(str(exc))
    console.print(f"CA certificate: {ca_folder / pki.CA_CERT}")
    console.print(
        f"CA SHA-256 fingerprint (give it to companies to check): {_fingerprint(ca.cert_pem)}"
    )


@federation_app.command("register")
def register(
    company: list[str] = typer.Option(
        [], "--company", help="Only this company (repeatable; default: every node key)."
    ),
    superlink: str | None = SUPERLINK_OPTION,
    ca: Path | None = CA_OPTION,
) -> None:
    """Register companies' node keys, as the registry holds them, with the SuperLink."""
    from sandbox.registry import service

    settings = load_settings()
    engine = get_engine(settings.database_url)
    cli = _connection(superlink, ca)
    chosen = company or [k.company_id for k in service.list_node_keys(engine)]
    if not chosen:
        fail("no company has a node key in the registry; `sandbox federation node-key` first")
    try:
        node_ids = local.register_nodes(
            engine,
            cli,
            chosen,
            local.FederationPaths.of(settings).registered_keys,
            Steps(),
        )
    except (local.FederationError, RegistryError) as exc:
        fail(str(exc))
    for company_id, node_id in node_ids.items():
        console.print(f"{company_id}: node {node_id} at {cli.address}")


@federation_app.command("up")
def up(
    company: list[str] = typer.Option(
        [], "--company", help="Only this company (repeatable; default: every local node)."
    ),
    port: int = typer.Option(local.DEFAULT_PORT, "--port", min=1, max=65535),
    timeout: float = typer.Option(240.0, "--timeout", min=10.0, help="Seconds to wait at most."),
) -> None:
    """Start a SuperLink and one SuperNode per company on loopback (TLS, node auth)."""
    settings = load_settings()
    engine = get_engine(settings.database_url)
    try:
        state = local.up(settings, engine, company or None, port, timeout, step=Steps())
    except (local.FederationError, RegistryError, processes.WaitTimeout, FlwrError) as exc:
        fail(str(exc))
    table = Table("company", "Flower node id", "pid", "local port", "log")
    for company_id, record in state.nodes.items():
        table.add_row(
            company_id, record.node_id or "-", str(record.pid), str(record.port), record.log
        )
    console.print(table)
    console.print(f"SuperLink at {state.address}; stop everything with `sandbox federation down`")


@federation_app.command("down")
def down() -> None:
    """Stop the local federation and check that no process is left behind."""
    report = local.down(load_settings(), step=Steps())
    for line in report.lines:
        console.print(f"  {line}")
    if not report.clean:
        fail(
            "left behind: "
            + ", ".join(report.leftovers + [f"port {p} open" for p in report.open_ports])
        )
    console.print("[green]federation down; no process left[/]")


@federation_app.command("status")
def status() -> None:
    """The local federation's processes and what the SuperLink sees of each node."""
    report = local.status(load_settings())
    if not report["up"]:
        console.print("no federation is up")
        return
    link = report["superlink"] or {}
    console.print(
        f"SuperLink {link.get('address')} pid {link.get('pid')} "
        f"{'running' if link.get('alive') else 'NOT RUNNING'}"
    )
    table = Table("company", "node id", "status", "pid", "process", "local port")
    for company_id, node in report["nodes"].items():
        table.add_row(
            company_id,
            str(node["node_id"]),
            node["status"],
            str(node["pid"]),
            "running" if node["alive"] else "NOT RUNNING",
            str(node["port"]),
        )
    console.print(table)


@federation_app.command("run")
def run(
    job_id: str | None = typer.Argument(None, help="A filed job (or give --spec)."),
    spec: Path | None = typer.Option(None, "--spec", help="File this job spec, then run it."),
    filed_by: str = typer.Option("engineer", "--as", help="The engineer filing --spec."),
    superlink: str | None = SUPERLINK_OPTION,
    ca: Path | None = CA_OPTION,
    timeout: float = typer.Option(3600.0, "--timeout", min=10.0, help="Seconds at most."),
) -> None:
    """Run a filed job on the federation, follow its rounds, and check how it ended."""
    from sandbox.federation.jobs import run_job
    from sandbox.governance import get_governance
    from sandbox.jobspec import JobSpecError, load_job_spec
    from sandbox.operations import check_runnable, file_job
    from sandbox.registry import service

    if (job_id is None) == (spec is None):
        fail("give either a job id or --spec FILE")
    settings = load_settings()
    engine = get_engine(settings.database_url)
    cli = _connection(superlink, ca)
    try:
        if spec is not None:
            filed = file_job(get_governance(settings), load_job_spec(spec), engineer=filed_by)
            job = filed.job
            console.print(
                f"Job [bold]{job.id}[/] filed: spec {job.spec_hash[:16]}…, "
                f"code bundle {job.bundle_hash and job.bundle_hash[:16]}…; {job.status}"
            )
            if not filed.allowed:
                fail("admission denied: " + " ".join(filed.reasons))
            job_id = job.id
        assert job_id is not None
        job = service.get_job(engine, job_id)
        check_runnable(job)
        rounds = service.job_spec(job).rounds
    except JobSpecError as exc:
        fail("; ".join(exc.problems))
    except RegistryError as exc:
        fail(str(exc))
    bar = Progress(
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    with bar:
        task = bar.add_task(f"job {job_id}: submitting", total=rounds)

        def on_round(record) -> None:  # type: ignore[no-untyped-def]
            auc = (record.metrics.get("evaluation") or {}).get("mean_auc")
            text = (
                f"round {record.number}/{rounds} {record.status}, {len(record.took_part)} companies"
            )
            bar.update(
                task,
                completed=record.number,
                description=text + (f", mean AUC {auc:.4f}" if auc is not None else ""),
            )

        try:
            outcome = run_job(
                engine,
                cli,
                job_id,
                timeout,
                on_round=on_round,
                on_status=lambda text: bar.update(task, description=text),
            )
        except (local.FederationError, FlwrError) as exc:
            fail(str(exc))
    console.print(
        f"Job {job_id}: {outcome.job_status}"
        + (f" ({outcome.job_reason})" if outcome.job_reason else "")
        + f"; Flower run {outcome.run_id}: {outcome.flower_status}"
        + (f" ({outcome.flower_details})" if outcome.flower_details not in ("", "N/A") else "")
        + f"; {outcome.seconds:.0f} s"
    )
    if not outcome.ok:
        raise typer.Exit(1)


@federation_app.command("ping")
def ping(superlink: str | None = SUPERLINK_OPTION, ca: Path | None = CA_OPTION) -> None:
    """Exit 0 when the SuperLink's Control API answers over TLS (a health check)."""
    cli = _connection(superlink, ca)
    try:
        nodes = cli.nodes()
    except FlwrError as exc:
        fail(str(exc))
    online = sum(1 for s in nodes.values() if s == "online")
    console.print(f"SuperLink {cli.address} answers; {online} of {len(nodes)} nodes online")


@federation_app.command("bundle")
def bundle(
    files: bool = typer.Option(False, "--files", help="List every file and its hash."),
) -> None:
    """The hash of the code bundle this installation runs (what a job files and a node checks)."""
    from sandbox.bundle import running_bundle

    current = running_bundle()
    if files:
        for path, digest in current.files:
            console.print(f"{digest}  {path}", highlight=False)
    console.print(f"code bundle {current.digest} ({len(current.files)} files)", highlight=False)


# ------------------------------------------------------- long-running processes
@federation_app.command("superlink")
def superlink_cmd(
    host: str = typer.Option("0.0.0.0", "--host", help="Address to listen on."),
    port: int = typer.Option(local.DEFAULT_PORT, "--port", min=1, max=65535),
    tls_dir: Path | None = typer.Option(
        None, "--tls-dir", help="server.key, server.crt, ca.crt (default: the local one)."
    ),
    database: Path | None = typer.Option(None, "--database", help="The SuperLink's state file."),
) -> None:
    """Become the SuperLink (TLS, node authentication); the coordinator's ServerApp runs here."""
    settings = load_settings()
    paths = local.FederationPaths.of(settings)
    tls = pki.ServerTls(tls_dir) if tls_dir is not None else paths.tls
    if not tls.exists():
        fail(f"{tls.folder} lacks server.key, server.crt or ca.crt; run `sandbox federation certs`")
    state = database or paths.root / "superlink.db"
    state.parent.mkdir(parents=True, exist_ok=True)
    home = paths.flwr_home("superlink")
    home.mkdir(parents=True, exist_ok=True)
    argv = local.superlink_argv(tls, host, port, state)
    os.execve(argv[0], argv, local.flower_env(home, {"SANDBOX_HOME": str(settings.home)}))


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
    """Make the company's SuperNode key at its node (once) and record its public half."""
    from sandbox.registry import service

    settings = load_settings()
    node = NodeHome(node_dir or settings.company_dir(company_id))
    path = node.node_auth_key_path
    try:
        if public_key is not None:
            engine = get_engine(settings.database_url)
            stored = service.set_node_key(
                engine, company_id, public_key.read_text(), replace=replace
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
        engine = get_engine(settings.database_url)
        if replace and path.exists():
            _rotate_node_key(
                node,
                company_id,
                lambda line: service.set_node_key(engine, company_id, line, replace=True),
            )
        elif replace:
            public = pki.generate_node_auth_key(path, f"{company_id} node")
            service.set_node_key(engine, company_id, public, replace=True)
        else:
            local.ensure_node_key(engine, company_id, node)
        stored = service.get_node_key(engine, company_id)
    except (local.FederationError, RegistryError, KeyFileError, pki.PkiError, OSError) as exc:
        fail(str(exc))
    console.print(f"{company_id}: node key {stored.fingerprint} ({path})")


@federation_app.command("demo-company")
def demo_company(
    industry: str = typer.Argument(..., help="A Census industry, e.g. 'Retail trade'."),
    rows: int = typer.Option(300, "--rows", min=20, help="Sample this many rows."),
    purpose: list[str] = typer.Option([], "--purpose", help="Grant consent (repeatable)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """A demo company's side of a deployment, once: join as a Census industry (vault and
    keys in its node folder) and make its node key. A company that has joined is kept."""
    from sandbox.data import census
    from sandbox.onboarding import onboard_company
    from sandbox.registry import service

    settings = load_settings()
    engine = get_engine(settings.database_url)
    if industry not in census.industries():
        fail(f"unknown industry {industry!r}; choose one of: {', '.join(census.industries())}")
    company_id = census.slug(industry)
    node = NodeHome(settings.company_dir(company_id))
    try:
        if node.info_path.exists():
            service.get_company(engine, company_id)
            console.print(f"{company_id} has already joined; its node folder is kept")
        else:
            done = onboard_company(
                engine,
                node.folder,
                company_id,
                industry,
                census.company_table(industry, rows=rows, seed=seed),
                purposes=tuple(purpose),
                seed=seed,
            )
            console.print(f"{company_id} joined with {done.dataset.row_count} rows")
        local.ensure_node_key(engine, company_id, node)
        record = service.get_node_key(engine, company_id)
    except (local.FederationError, RegistryError, KeyFileError, ValueError) as exc:
        fail(str(exc))
    console.print(f"{company_id}: node key {record.fingerprint} ({node.node_auth_key_path})")


@federation_app.command("node")
def node_cmd(
    company_id: str = typer.Argument(...),
    superlink: str = typer.Option(
        f"{local.LOOPBACK}:{local.DEFAULT_PORT}", "--superlink", help="SuperLink host:port."
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
    argv = local.supernode_argv(superlink, ca_cert, node, company_id, port)
    os.execve(argv[0], argv, local.flower_env(home, database=False))
