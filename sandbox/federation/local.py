"""The federation as local processes on loopback: one SuperLink, one SuperNode per company.

``up`` issues the TLS certificates from the sandbox's CA, makes sure every company's node has
an authentication key whose public half is in the registry, starts the SuperLink (TLS, node
authentication, no runtime dependency installation), registers every company's key *from the
registry* with it (recording the node id the SuperLink assigns), starts one SuperNode per
company with its company id and node folder as node config, and waits until every node is
online. ``down`` stops the runs, the process groups and Flower's detached helpers, and checks
that nothing is left. Bookkeeping (pids, ports, logs) lives in ``SANDBOX_HOME/federation/``.

The same argument lists serve ``sandbox federation superlink`` and ``sandbox federation
node``, the commands the compose file and a multi-machine deployment run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from sandbox import pki
from sandbox.bundle import code_root, running_bundle
from sandbox.config import Settings
from sandbox.federation import processes
from sandbox.federation.flwr_cli import FlwrCli, FlwrError
from sandbox.node import NodeHome, write_json_atomic
from sandbox.registry import service
from sandbox.registry.errors import NotFound

DEFAULT_PORT = 9092
LOOPBACK = "127.0.0.1"
NODE_MAX_RETRIES = 10
NODE_MAX_WAIT_S = 120
_NODE_CONFIG_VALUE = re.compile(r"^[A-Za-z0-9._/@+-]+$")


class FederationError(RuntimeError):
    """The federation cannot be started, reached or stopped as asked; the message says why."""


Step = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


# --------------------------------------------------------------------------- where
@dataclass(frozen=True)
class FederationPaths:
    root: Path

    @classmethod
    def of(cls, settings: Settings) -> FederationPaths:
        return cls(settings.home / "federation")

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def tls(self) -> pki.ServerTls:
        return pki.ServerTls(self.root / "tls")

    @property
    def superlink_db(self) -> Path:
        return self.root / "superlink.db"

    @property
    def registered_keys(self) -> Path:
        return self.root / "registered-keys"

    def flwr_home(self, name: str) -> Path:
        return self.root / "flwr" / name


def ca_cert_path(settings: Settings) -> Path:
    return settings.keys_dir / pki.CA_CERT


def flower_program(name: str) -> str:
    """The absolute path of a Flower program beside this Python (the venv's ``bin``)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FederationError(f"{name} is not installed beside {sys.executable} nor on PATH")
    return found


def flower_env(
    flwr_home: Path, extra: Mapping[str, str] | None = None, database: bool = True
) -> dict[str, str]:
    """The environment of a Flower process: this venv's ``bin`` first on PATH (the SuperLink
    and SuperNodes start ``flower-superexec`` by name), this process's code first on
    PYTHONPATH (so the apps they load are the code this command runs), no telemetry, no
    update check, and its own ``FLWR_HOME``. ``database=False`` keeps the database URL out
    (a company's node never needs it)."""
    env = dict(os.environ)
    if not database:
        env.pop("SANDBOX_DATABASE_URL", None)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(code_root()), env.get("PYTHONPATH", "")] if p
    )
    env.update(
        {
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_HOME": str(flwr_home),
        }
    )
    env.update(extra or {})
    return env


# -------------------------------------------------------------------- commands
def superlink_argv(tls: pki.ServerTls, host: str, port: int, database: Path) -> list[str]:
    """The SuperLink: HTTPS on one port (Fleet, Control and ServerAppIo APIs) with the
    sandbox's certificate, SuperNode authentication, no ``uv sync`` at run time."""
    return [
        flower_program("flower-superlink"),
        "--ssl-ca-certfile",
        str(tls.ca_cert.resolve()),
        "--ssl-certfile",
        str(tls.cert.resolve()),
        "--ssl-keyfile",
        str(tls.key.resolve()),
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
        "--database",
        str(database.resolve()),
        "--host",
        host,
        "--port",
        str(port),
    ]


def node_config(company_id: str, node_dir: Path) -> str:
    """``--node-config`` for a company's node: its id and its node folder (vault and keys)."""
    for value in (company_id, str(node_dir)):
        if not _NODE_CONFIG_VALUE.match(value):
            raise FederationError(
                f"{value!r} cannot travel in Flower's node config (spaces or quotes)"
            )
    return f'company-id="{company_id}" node-dir="{node_dir}"'


def supernode_argv(
    superlink: str,
    ca_cert: Path,
    node: NodeHome,
    company_id: str,
    port: int,
    host: str = LOOPBACK,
) -> list[str]:
    """A company's SuperNode: trusts only the sandbox CA, authenticates with the company's
    node key, carries the company id and node folder as node config. ``--host/--port`` is
    the node's own local API for its ClientApp processes."""
    return [
        flower_program("flower-supernode"),
        "--superlink",
        superlink,
        "--root-certificates",
        str(ca_cert.resolve()),
        "--auth-supernode-private-key",
        str(node.node_auth_key_path.resolve()),
        "--node-config",
        node_config(company_id, node.folder.resolve()),
        "--host",
        host,
        "--port",
        str(port),
        "--max-retries",
        str(NODE_MAX_RETRIES),
        "--max-wait-time",
        str(NODE_MAX_WAIT_S),
    ]


# ------------------------------------------------------------------- node keys
def ensure_node_key(engine: Engine, company_id: str, node: NodeHome) -> str:
    """The company's node key, created in its node folder on first use (the company's step),
    with its public half recorded in the registry (the sandbox's step). A node folder whose
    key is not the registry's is refused: the SuperLink would refuse that node anyway."""
    path = node.node_auth_key_path
    if not node.info_path.exists() or node.company_id != company_id:
        raise FederationError(f"{node.folder} is not the node folder of {company_id}")
    if path.exists():
        public = pki.read_node_private_key_public_line(path)
    else:
        public = pki.generate_node_auth_key(path, f"{company_id} node")
    try:
        registered = service.get_node_key(engine, company_id).public_key
    except NotFound:
        return service.set_node_key(engine, company_id, public).public_key
    if registered != public:
        raise FederationError(
            f"the registry holds another node key for {company_id} than {path}; rotate it "
            f"with `sandbox federation node-key {company_id} --replace`"
        )
    return registered


def register_nodes(
    engine: Engine, cli: FlwrCli, companies: Iterable[str], keys_dir: Path, step: Step = _quiet
) -> dict[str, str]:
    """Register each company's node key, as the registry holds it, with the SuperLink; the
    node id per company. A key the SuperLink already holds counts when the registry
    recorded its node id at this SuperLink (a re-run after a restart)."""
    node_ids = {}
    for company_id in companies:
        record = service.get_node_key(engine, company_id)
        key_file = keys_dir / f"{company_id}.pub"
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(f"{record.public_key} {company_id}\n")
        step(f"registering {company_id}'s node key ({record.fingerprint[:19]}…)")
        try:
            node_id = cli.register(key_file, company_id)
        except FlwrError as exc:
            if (
                "already in use" in str(exc)
                and record.superlink == cli.address
                and record.flower_node_id is not None
            ):
                node_ids[company_id] = record.flower_node_id
                continue
            raise FederationError(str(exc)) from exc
        service.record_node_registration(
            engine, company_id, record.public_key, cli.address, node_id
        )
        node_ids[company_id] = node_id
    return node_ids


def wait_online(
    cli: FlwrCli,
    node_ids: Iterable[str],
    timeout: float,
    watch: Callable[[], None] = lambda: None,
) -> float:
    """Wait until every node id is online at the SuperLink; ``watch`` raises when a node's
    process has died (no point waiting for it)."""
    wanted = set(node_ids)

    def online() -> bool:
        watch()
        try:
            statuses = cli.nodes()
        except FlwrError:
            return False
        return all(statuses.get(n) == "online" for n in wanted)

    return processes.wait_until(online, timeout, "company nodes online", step=1.0)


# --------------------------------------------------------------------- state
@dataclass
class ProcessRecord:
    pid: int
    port: int
    log: str
    node_id: str | None = None


@dataclass
class FederationState:
    host: str
    superlink: ProcessRecord | None = None
    nodes: dict[str, ProcessRecord] = field(default_factory=dict)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    code_root: str = ""
    bundle: str = ""

    @property
    def address(self) -> str:
        if self.superlink is None:
            raise FederationError("the federation has no SuperLink")
        return f"{self.host}:{self.superlink.port}"

    @property
    def ports(self) -> list[int]:
        records = [self.superlink, *self.nodes.values()]
        return [r.port for r in records if r is not None]

    @property
    def pids(self) -> list[int]:
        records = [*self.nodes.values(), self.superlink]
        return [r.pid for r in records if r is not None]

    def save(self, path: Path) -> None:
        write_json_atomic(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> FederationState | None:
        if not path.exists():
            return None
        raw: dict[str, Any] = json.loads(path.read_text())
        link = raw.get("superlink")
        return cls(
            host=raw["host"],
            superlink=ProcessRecord(**link) if link else None,
            nodes={c: ProcessRecord(**r) for c, r in raw.get("nodes", {}).items()},
            started_at=raw.get("started_at", ""),
            code_root=raw.get("code_root", ""),
            bundle=raw.get("bundle", ""),
        )


def cli_for(settings: Settings, address: str, ca_cert: Path | None = None) -> FlwrCli:
    """The ``flwr`` CLI against ``address``, trusting the sandbox CA."""
    paths = FederationPaths.of(settings)
    home = paths.flwr_home("cli")
    return FlwrCli(
        Path(flower_program("flwr")),
        home,
        address,
        ca_cert or ca_cert_path(settings),
        flower_env(home),
    )


# ------------------------------------------------------------------------ up
def local_companies(settings: Settings, engine: Engine) -> list[str]:
    """Registered companies whose node folder is on this machine."""
    return [
        c.id
        for c in service.list_companies(engine)
        if NodeHome(settings.company_dir(c.id)).info_path.exists()
    ]


def _check_alive(name: str, record: ProcessRecord) -> None:
    if not processes.alive(record.pid):
        processes.reap(record.pid)
        raise FederationError(
            f"{name} exited; the end of its log ({record.log}):\n"
            + processes.log_tail(Path(record.log))
        )


def up(
    settings: Settings,
    engine: Engine,
    companies: list[str] | None = None,
    port: int = DEFAULT_PORT,
    timeout: float = 240.0,
    step: Step = _quiet,
) -> FederationState:
    """Start the federation; on any failure everything started so far is stopped again."""
    paths = FederationPaths.of(settings)
    existing = FederationState.load(paths.state)
    if existing is not None and any(processes.alive(p) for p in existing.pids):
        raise FederationError(
            f"a federation is already up (SuperLink {existing.address}); "
            "run `sandbox federation down` first"
        )
    chosen = companies or local_companies(settings, engine)
    if not chosen:
        raise FederationError("no company with a node folder on this machine has joined")
    for company_id in chosen:
        service.get_company(engine, company_id)
    if processes.port_open(LOOPBACK, port):
        raise FederationError(f"port {port} on {LOOPBACK} is taken; choose another with --port")
    deadline = time.monotonic() + timeout

    step("issuing TLS certificates from the sandbox CA")
    ca = pki.load_or_create_ca(settings.keys_dir)
    tls = paths.tls
    if not tls.exists() or not {"127.0.0.1", "localhost"} <= tls.names():
        pki.write_server_tls(ca, tls.folder)
    step("checking each company's node key against the registry")
    nodes = {c: NodeHome(settings.company_dir(c)) for c in chosen}
    for company_id, node in nodes.items():
        ensure_node_key(engine, company_id, node)

    for stale in paths.root.glob("superlink.db*"):
        stale.unlink()
    state = FederationState(host=LOOPBACK, code_root=str(code_root()))
    state.bundle = running_bundle().digest
    try:
        step(f"starting the SuperLink on {LOOPBACK}:{port} (TLS, node authentication)")
        log = paths.logs / "superlink.log"
        home = paths.flwr_home("superlink")
        home.mkdir(parents=True, exist_ok=True)
        pid = processes.spawn(
            superlink_argv(tls, LOOPBACK, port, paths.superlink_db),
            flower_env(home, {"SANDBOX_HOME": str(settings.home)}),
            log,
            cwd=home,
        )
        state.superlink = ProcessRecord(pid=pid, port=port, log=str(log))
        state.save(paths.state)
        cli = cli_for(settings, state.address)

        def superlink_ready() -> bool:
            assert state.superlink is not None
            _check_alive("the SuperLink", state.superlink)
            return processes.port_open(LOOPBACK, port) and cli.answers()

        processes.wait_until(
            superlink_ready, deadline - time.monotonic(), "SuperLink ready", step=1.0
        )
        node_ids = register_nodes(engine, cli, chosen, paths.registered_keys, step)
        for company_id, node in nodes.items():
            step(f"starting {company_id}'s SuperNode")
            node_port = processes.free_port()
            log = paths.logs / f"node-{company_id}.log"
            home = paths.flwr_home(f"node-{company_id}")
            home.mkdir(parents=True, exist_ok=True)
            pid = processes.spawn(
                supernode_argv(state.address, ca_cert_path(settings), node, company_id, node_port),
                flower_env(home, database=False),
                log,
                cwd=home,
            )
            state.nodes[company_id] = ProcessRecord(
                pid=pid, port=node_port, log=str(log), node_id=node_ids[company_id]
            )
            state.save(paths.state)

        def nodes_alive() -> None:
            for company_id, record in state.nodes.items():
                _check_alive(f"{company_id}'s SuperNode", record)

        step(f"waiting for {len(nodes)} company nodes to come online")
        wait_online(cli, node_ids.values(), deadline - time.monotonic(), nodes_alive)
    except BaseException:
        down(settings)
        raise
    step("federation up")
    return state


# ---------------------------------------------------------------------- down
@dataclass
class DownReport:
    lines: list[str]
    leftovers: list[str]
    open_ports: list[int]

    @property
    def clean(self) -> bool:
        return not self.leftovers and not self.open_ports


def down(settings: Settings, step: Step = _quiet) -> DownReport:
    """Stop everything ``up`` started: runs in flight, SuperNodes, the SuperLink, and
    Flower's detached helpers (those naming the federation's ports or living under its
    ``FLWR_HOME``)."""
    paths = FederationPaths.of(settings)
    state = FederationState.load(paths.state)
    if state is None:
        return DownReport(["no federation is up"], [], [])
    lines: list[str] = []
    if state.superlink is not None and processes.alive(state.superlink.pid):
        step("stopping runs in flight")
        try:
            cli = cli_for(settings, state.address)
            for run in cli.runs():
                if not run.finished:
                    lines.append(
                        f"run {run.run_id}: stop {'sent' if cli.stop(run.run_id) else 'refused'}"
                    )
        except FlwrError as exc:
            lines.append(f"runs could not be listed: {exc}")
    for company_id, record in state.nodes.items():
        step(f"stopping {company_id}'s SuperNode")
        lines.append(f"{company_id}'s SuperNode: {processes.stop_group(record.pid)}")
    if state.superlink is not None:
        step("stopping the SuperLink")
        lines.append(f"SuperLink: {processes.stop_group(state.superlink.pid)}")
    step("stopping Flower's detached helpers")

    def ours() -> list[processes.FlowerProcess]:
        running = processes.flower_processes()
        found = {p.pid: p for p in processes.naming_ports(running, state.ports)}
        found.update({p.pid: p for p in processes.flwr_home_under(running, paths.root)})
        return list(found.values())

    for _ in range(3):
        orphans = ours()
        if not orphans:
            break
        lines.extend(processes.kill_processes(orphans))
        time.sleep(0.5)
    leftovers = [f"{p.program} (pid {p.pid})" for p in ours()]
    leftovers += [f"pid {pid}" for pid in state.pids if processes.alive(pid)]
    open_ports = [p for p in state.ports if processes.port_open(state.host, p)]
    if not leftovers and not open_ports:
        paths.state.unlink(missing_ok=True)
    return DownReport(lines, leftovers, open_ports)


def status(settings: Settings) -> dict[str, Any]:
    """What runs: each process with its pid, port and liveness, and the SuperLink's view."""
    paths = FederationPaths.of(settings)
    state = FederationState.load(paths.state)
    if state is None:
        return {"up": False}
    report: dict[str, Any] = {
        "up": True,
        "superlink": None,
        "nodes": {},
        "started_at": state.started_at,
    }
    if state.superlink is not None:
        report["superlink"] = {
            "address": state.address,
            "pid": state.superlink.pid,
            "alive": processes.alive(state.superlink.pid),
            "log": state.superlink.log,
        }
    seen: dict[str, str] = {}
    if report["superlink"] and report["superlink"]["alive"]:
        try:
            seen = cli_for(settings, state.address).nodes()
        except FlwrError as exc:
            report["superlink"]["error"] = str(exc)
    for company_id, record in state.nodes.items():
        report["nodes"][company_id] = {
            "pid": record.pid,
            "port": record.port,
            "alive": processes.alive(record.pid),
            "node_id": record.node_id,
            "status": seen.get(record.node_id or "", "unknown"),
            "log": record.log,
        }
    return report
