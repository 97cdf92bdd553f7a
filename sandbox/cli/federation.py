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
from pathlib import Path
from typing import NoReturn

import typer
from cryptography.hazmat.primitives import serialization
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sandbox.cli.render import acting, governance
from sandbox.config import load_settings
from sandbox.errors import SandboxError
from sandbox.identity import KeyFileError, pki
from sandbox.runtime.federation import commands, local, processes, registration
from sandbox.runtime.federation.flwr_cli import FlwrCli, FlwrError
from sandbox.services import jobs as job_service
from sandbox.services import nodes as node_service
from sandbox.services import principals as principal_service

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


def fail(message: str, code: int = 1) -> NoReturn:
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
        Path(commands.flower_program("flwr")), home, superlink, ca_cert, commands.flower_env(home)
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
    node_keys: Path | None = typer.Option(
        None, "--node-keys", help="A folder of node public keys the companies sent (<id>.pub)."
    ),
    admit: bool = typer.Option(
        False,
        "--admit",
        help="First admit the pending applications of the companies whose "
        "node keys are in --node-keys (the operator's review, for demos).",
    ),
) -> None:
    """Register companies' node keys, as the registry holds them, with the SuperLink (as
    the operator: each registration decided and recorded). With ``--node-keys``, first record
    the public keys the companies left there (``<company>.pub``)."""
    from sandbox.services import applications as application_service

    settings = load_settings()
    gov = governance()
    operator = principal_service.operator(gov)
    cli = _connection(superlink, ca)
    try:
        if admit and node_keys is not None:
            sent = {key_file.stem for key_file in node_keys.glob("*.pub")}
            for pending in application_service.list_applications(gov, operator):
                if pending.company_id in sent:
                    declared = application_service.declared(pending)
                    application_service.admit(gov, operator, pending.id, declared)
                    console.print(f"{pending.company_id}: admitted ({pending.id})")
        if node_keys is not None:
            for key_file in sorted(node_keys.glob("*.pub")):
                node_service.record_node_key(gov, operator, key_file.stem, key_file.read_text())
        chosen = company or [k.company_id for k in node_service.node_keys(gov, operator)]
    except (SandboxError, OSError) as exc:
        fail(str(exc))
    if not chosen:
        fail("no company has a node key in the registry; `sandbox federation node-key` first")
    try:
        node_ids = registration.register_nodes(
            gov,
            cli,
            chosen,
            local.FederationPaths.of(settings).registered_keys,
            Steps(),
        )
    except (commands.FederationError, SandboxError) as exc:
        fail(str(exc))
    for company_id, node_id in node_ids.items():
        console.print(f"{company_id}: node {node_id} at {cli.address}")


@federation_app.command("up")
def up(
    company: list[str] = typer.Option(
        [], "--company", help="Only this company (repeatable; default: every local node)."
    ),
    port: int = typer.Option(commands.DEFAULT_PORT, "--port", min=1, max=65535),
    timeout: float = typer.Option(240.0, "--timeout", min=10.0, help="Seconds to wait at most."),
) -> None:
    """Start a SuperLink and one SuperNode per company on loopback (TLS, node auth)."""
    settings = load_settings()
    try:
        state = local.up(settings, governance(), company or None, port, timeout, step=Steps())
    except (commands.FederationError, SandboxError, processes.WaitTimeout, FlwrError) as exc:
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
    filed_by: str = typer.Option(
        "engineer", "--as", help="Who files --spec and starts the job (an engineer)."
    ),
    superlink: str | None = SUPERLINK_OPTION,
    ca: Path | None = CA_OPTION,
    timeout: float = typer.Option(3600.0, "--timeout", min=10.0, help="Seconds at most."),
    once: bool = typer.Option(
        False,
        "--once",
        help="With --spec: if this engineer filed the same spec before, run "
        "that job if it has not started, and file nothing if it completed (repeatable starts).",
    ),
) -> None:
    """Start a filed job on the federation (decided and recorded), follow its rounds, and
    check how it ended."""
    from sandbox.protocol.jobspec import JobSpecError, load_job_spec
    from sandbox.runtime.federation.jobs import run_job

    if (job_id is None) == (spec is None):
        fail("give either a job id or --spec FILE")
    gov = governance()
    cli = _connection(superlink, ca)
    try:
        starter = acting(gov, filed_by, "engineer")
        earlier = (
            job_service.filed_before(gov, starter, load_job_spec(spec)) if once and spec else None
        )
        if earlier is not None and earlier.status in ("completed", "running"):
            console.print(f"Job {earlier.id} ran this spec already ({earlier.status}); nothing "
                          "filed (stop a job left running before filing the spec again)")  # fmt: skip
            return
        if earlier is not None:
            console.print(f"Job {earlier.id} was filed with this spec already ({earlier.status})")
            job_id, spec = earlier.id, None
        if spec is not None:
            filed = job_service.file_job(gov, load_job_spec(spec), starter)
            job = filed.job
            console.print(
                f"Job [bold]{job.id}[/] filed: spec {job.spec_hash[:16]}…, "
                f"code bundle {job.bundle_hash and job.bundle_hash[:16]}…; {job.status}"
            )
            if not filed.allowed:
                fail("admission denied: " + " ".join(filed.reasons))
            job_id = job.id
        assert job_id is not None
        job = job_service.store_job(gov, job_id)
        if spec is None:
            starter = acting(gov, job.filed_by if filed_by == "engineer" else filed_by, "engineer")
        rounds = int(job.spec.get("rounds", 0))
    except JobSpecError as exc:
        fail("; ".join(exc.problems))
    except SandboxError as exc:
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
                gov,
                starter,
                cli,
                job_id,
                timeout,
                on_round=on_round,
                on_status=lambda text: bar.update(task, description=text),
            )
        except (commands.FederationError, FlwrError, SandboxError) as exc:
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
    from sandbox.protocol.bundle import running_bundle

    current = running_bundle()
    if files:
        for path, digest in current.files:
            console.print(f"{digest}  {path}", highlight=False)
    console.print(f"code bundle {current.digest} ({len(current.files)} files)", highlight=False)


# ------------------------------------------------------- long-running processes
@federation_app.command("superlink")
def superlink_cmd(
    host: str = typer.Option("0.0.0.0", "--host", help="Address to listen on."),
    port: int = typer.Option(commands.DEFAULT_PORT, "--port", min=1, max=65535),
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
    argv = commands.superlink_argv(tls, host, port, state)
    os.execve(argv[0], argv, commands.flower_env(home, {"SANDBOX_HOME": str(settings.home)}))
