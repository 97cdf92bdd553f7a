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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sandbox.config import Settings
from sandbox.files import write_json_atomic
from sandbox.governance import Governance
from sandbox.identity import pki
from sandbox.node.home import NodeHome
from sandbox.protocol.bundle import code_root, running_bundle
from sandbox.runtime.federation import processes
from sandbox.runtime.federation.commands import (
    DEFAULT_PORT,
    LOOPBACK,
    FederationError,
    Step,
    flower_env,
    flower_program,
    superlink_argv,
    supernode_argv,
)
from sandbox.runtime.federation.flwr_cli import FlwrCli, FlwrError
from sandbox.runtime.federation.registration import ensure_node_key, register_nodes, wait_online
from sandbox.services import companies as companies_service
from sandbox.services import principals
from sandbox.utc import utcnow


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
    started_at: str = field(default_factory=lambda: utcnow().isoformat())
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
def local_companies(settings: Settings, gov: Governance) -> list[str]:
    """Registered companies whose node folder is on this machine."""
    return [
        c.id
        for c in companies_service.list_companies(gov, principals.operator(gov))
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
    gov: Governance,
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
    joined = local_companies(settings, gov)
    chosen = companies or joined
    if not chosen:
        raise FederationError("no company with a node folder on this machine has joined")
    for company_id in chosen:
        if company_id not in joined:
            raise FederationError(f"no company {company_id!r} with a node folder here has joined")
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
        ensure_node_key(gov, company_id, node)

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
        node_ids = register_nodes(gov, cli, chosen, paths.registered_keys, step)
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
