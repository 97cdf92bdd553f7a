"""Flower's deployment engine end to end, with real processes, real TLS and PostgreSQL.

``sandbox federation up`` starts a SuperLink and three company SuperNodes on loopback (TLS
from the sandbox CA, node authentication with keys from the registry); a two-round job runs
through ``sandbox federation run``; ``down`` must leave no process behind. The negative
cases use the same federation: a node with an unregistered key, a node without the CA, a
node running code other than the filed code bundle.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from policies.facts import EngineerFacts
from sandbox.config import Settings, load_settings
from sandbox.db import dispose_engines, get_engine
from sandbox.governance import get_governance
from sandbox.identity import pki
from sandbox.node.home import NodeHome
from sandbox.node.locallog import HashChainLog
from sandbox.protocol.bundle import bundle_of, code_root, package_folders, running_bundle
from sandbox.protocol.jobspec import JobSpec
from sandbox.protocol.warrant import Warrant
from sandbox.registry import jobs as job_store
from sandbox.registry import nodes as node_store
from sandbox.registry.models import Job
from sandbox.runtime.federation import APP_DIR, commands, local, processes, registration
from sandbox.runtime.federation.node import CONNECTED_FILE, is_connected
from sandbox.services.jobs import file_job
from sandbox.services.runs import start_job
from tests.conftest import fresh_postgres_database
from tests.runtime.test_federated import join
from tests.support.filewatch import watch_opens

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.deployment]

INDUSTRIES = ["Construction", "Education", "Retail trade"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
NEGATIVE_WAIT_S = 90.0


@dataclass
class Federation:
    settings: Settings
    env: dict[str, str]
    companies: list[str]
    port: int
    timings: dict[str, object]

    @property
    def state(self) -> local.FederationState:
        state = local.FederationState.load(local.FederationPaths.of(self.settings).state)
        assert state is not None
        return state

    def sandbox(self, *args: str, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
        """The ``sandbox`` command, as a separate process running this checkout's code."""
        return subprocess.run(
            [sys.executable, "-m", "sandbox.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )


def ours(settings: Settings, ports: list[int]) -> list[processes.FlowerProcess]:
    running = processes.flower_processes()
    root = local.FederationPaths.of(settings).root
    found = {p.pid: p for p in processes.naming_ports(running, ports)}
    found.update({p.pid: p for p in processes.flwr_home_under(running, root)})
    return list(found.values())


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    home = tmp_path_factory.mktemp("deployment") / "home"
    with fresh_postgres_database() as url, pytest.MonkeyPatch.context() as patch:
        patch.setenv("SANDBOX_HOME", str(home))
        patch.setenv("SANDBOX_DATABASE_URL", url)
        settings = load_settings()
        engine = get_engine(settings.database_url)
        companies = join(settings, engine, INDUSTRIES, rows=200)
        env = {**os.environ, "PYTHONPATH": str(code_root())}
        fed = Federation(settings, env, companies, processes.free_port(), {})
        ports: list[int] = [fed.port]
        try:
            started = time.monotonic()
            done = fed.sandbox("federation", "up", "--port", str(fed.port), timeout=400)
            fed.timings["up_s"] = round(time.monotonic() - started, 1)
            assert done.returncode == 0, done.stdout + done.stderr
            ports = fed.state.ports
            yield fed
        finally:
            stopped = fed.sandbox("federation", "down", timeout=300)
            time.sleep(1.0)
            left = ours(settings, ports)
            dispose_engines()
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "deployment-timing.json").write_text(json.dumps(fed.timings, indent=2))
            # The last test has taken the federation down already; `down` again is harmless.
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
            assert left == [], f"left behind: {left}"
            assert [p for p in ports if processes.port_open("127.0.0.1", p)] == []


def test_up_starts_three_authenticated_nodes_with_registry_keys(federation: Federation) -> None:
    engine = get_engine(federation.settings.database_url)
    state = federation.state
    assert sorted(state.nodes) == sorted(federation.companies)
    status = federation.sandbox("federation", "status")
    assert status.returncode == 0
    for company_id, record in state.nodes.items():
        key = node_store.get_node_key(engine, company_id)
        # The registry's key is the one the node folder holds and the one registered.
        node = NodeHome(federation.settings.company_dir(company_id))
        assert pki.read_node_private_key_public_line(node.node_auth_key_path) == key.public_key
        assert key.flower_node_id == record.node_id and key.superlink == state.address
        assert f"{company_id}" in status.stdout and "online" in status.stdout
        # The node's health check: connected and authenticated, with the id the SuperLink gave.
        health = federation.sandbox("federation", "node-health", company_id)
        assert health.returncode == 0, health.stdout + health.stderr
        marker = json.loads((node.folder / CONNECTED_FILE).read_text())
        assert str(marker["node_id"]) == str(record.node_id)
        # Each node runs this checkout's code, without access to the database.
        environ = Path(f"/proc/{record.pid}/environ").read_bytes().split(b"\0")
        assert f"PYTHONPATH={code_root()}".encode() in [e.split(b":")[0] for e in environ]
        assert not any(e.startswith(b"SANDBOX_DATABASE_URL=") for e in environ)
    # The SuperLink speaks TLS with a certificate from the sandbox CA, for loopback.
    tls = local.FederationPaths.of(federation.settings).tls
    ca_pem = local.ca_cert_path(federation.settings).read_bytes()
    pki.verify_server_certificate(ca_pem, tls.cert.read_bytes(), "127.0.0.1")
    assert (federation.settings.keys_dir / pki.CA_KEY).stat().st_mode & 0o077 == 0


SMALL_DP = {"dp": {"epsilon": 0.5}}
"""For the federation's later jobs: its companies spent most of their budget for the
purpose on the jobs before, and a job they cannot pay for is refused at filing."""


def governed_job(settings: Settings, companies: list[str], **fields: Any) -> Job:
    """A job filed through the policy engine, as the product files it: census rows are
    personal data, so it trains with differential privacy."""
    spec = JobSpec.model_validate(
        {
            "purpose": "income-prediction",
            "companies": companies,
            "privacy": {"dp": {"epsilon": 2.0}},
            **fields,
        }
    )
    filed = file_job(get_governance(settings), spec, EngineerFacts("engineer"))
    assert filed.allowed and filed.job.status == "admitted", filed.reasons
    return filed.job


def test_a_two_round_job_runs_end_to_end_on_postgres(
    federation: Federation, tmp_path: Path
) -> None:
    engine = get_engine(federation.settings.database_url)
    job = governed_job(
        federation.settings,
        federation.companies,
        rounds=2,
        local_epochs=1,
        min_participants=3,
        round_timeout_s=180,
    )
    load = Path("/proc/loadavg").read_text().split()[:3]
    started = time.monotonic()
    superlink = federation.state.superlink
    assert superlink is not None
    # Everything the coordinator's side opens (the SuperLink, its ServerApp process and
    # whatever they start) is watched from outside with strace: native reads included.
    with watch_opens(superlink.pid, tmp_path / "superlink.strace") as opens:
        done = federation.sandbox("federation", "run", job.id, "--timeout", "900", timeout=1000)
    seconds = round(time.monotonic() - started, 1)
    assert done.returncode == 0, done.stdout + done.stderr
    companies_root = federation.settings.home / "companies"
    assert any("coordinator" in p for p in opens.paths), "the watch saw the ServerApp start"
    assert opens.under(companies_root) == [], "the coordinator's side opened a company's files"
    assert f"Job {job.id}: completed" in " ".join(done.stdout.split())

    job = job_store.get_job(engine, job.id)
    assert job.status == "completed" and job.rounds_completed == 2
    assert job.bundle_hash == running_bundle().digest
    assert job.spec_hash == job_store.job_spec(job).spec_hash
    rounds = job_store.rounds_of(engine, job.id)
    assert [r.number for r in rounds] == [1, 2]
    for record in rounds:
        assert record.status == "completed"
        assert record.took_part == sorted(federation.companies)
        assert record.missing == [] and record.rejected == []
        assert set(record.metrics["evaluation"]["companies"]) == set(federation.companies)
    assert 0.5 < job.result["mean_auc"]["federated"] <= 1.0
    assert (federation.settings.runs_dir / job.id / "model.npz").exists()

    # What each company recorded of the job: its own hash-chained log verifies, and holds
    # one allowed decision and one use per task the coordinator reports it served.
    for company_id in federation.companies:
        log = HashChainLog(NodeHome(federation.settings.company_dir(company_id)).local_log_path)
        check = log.verify()
        assert check.ok, check
        uses = [
            line.event
            for line in log.read()
            if line.event.get("kind") == "data-use" and line.event.get("job") == job.id
        ]
        tasks = {(u["task"], u["round"]) for u in uses}
        # A DP job: the initial model scored (no exact statistics), the baseline under DP.
        assert {
            ("evaluate", 0),
            ("local-baseline", 0),
            ("train", 1),
            ("train", 2),
            ("evaluate", 1),
            ("evaluate", 2),
            ("assess", 0),
        } <= tasks
        assert {t for t, _ in tasks} <= {
            "feature-stats", "local-baseline", "train", "evaluate", "assess", "evaluate-models"
        }  # fmt: skip
        # Every use the company logged is a receipt the coordinator recorded, and back.
        receipts = [
            r for r in job_store.receipts_of_job(engine, job.id) if r.company_id == company_id
        ]
        assert len(receipts) == len(uses)
        # Each use was under the job's warrant, after the node's own allowed decision.
        assert {u["warrant"] for u in uses} == {Warrant.parse(job.warrant or "").digest()}
        assert any(
            line.event.get("kind") == "decision" and line.event.get("allowed")
            for line in log.read()
        )

    # The ledger, written by the coordinator's process under the SuperLink, verifies.
    ledger = get_governance(federation.settings).ledger
    report = ledger.verify()
    assert report.ok, report.problems
    actions = [json.loads(e.entry)["action"] for e in ledger.iter_entries()]
    for expected in ("decision.submit_job", "receipt.recorded", "round.completed", "model.trained"):
        assert expected in actions

    federation.timings.update(
        {
            "job_run_command_s": seconds,
            "loadavg_at_start": load,
            "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3],
            "rounds_s": [
                round((r.ended_at - r.started_at).total_seconds(), 1)
                for r in rounds
                if r.ended_at is not None
            ],
            "round_contents": "train + evaluate (2 message exchanges) with 3 nodes",
        }
    )


def _refused_node(
    federation: Federation, name: str, argv_change: Callable[[list[str]], list[str]], tmp: Path
) -> tuple[int | str, str]:
    """Start a SuperNode that should be refused; (exit code, log) once it has exited."""
    node_dir = tmp / name
    node = NodeHome(node_dir)
    node.folder.mkdir(parents=True)
    pki.generate_node_auth_key(node.node_auth_key_path, name)
    argv = commands.supernode_argv(
        federation.state.address,
        local.ca_cert_path(federation.settings),
        node,
        name,
        processes.free_port(),
    )
    argv = argv_change(argv)
    log_path = tmp / f"{name}.log"
    home = tmp / f"{name}-flwr"
    home.mkdir()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=commands.flower_env(home, database=False),
            start_new_session=True,
        )
    try:
        code: int | str = process.wait(timeout=NEGATIVE_WAIT_S)
    except subprocess.TimeoutExpired:
        code = "still running"
    # The node's own SuperExec may outlive it: the whole session goes.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    for helper in processes.flwr_home_under(processes.flower_processes(), home):
        os.kill(helper.pid, signal.SIGKILL)
    return code, processes.log_tail(log_path, 200)


def test_a_node_with_an_unregistered_key_is_refused(federation: Federation, tmp_path: Path) -> None:
    cli = local.cli_for(federation.settings, federation.state.address)
    before = cli.nodes()
    code, log = _refused_node(federation, "rogue", lambda argv: argv, tmp_path)
    assert code == 1, log
    assert "Failed to activate SuperNode" in log and "2004" in log, log
    assert cli.nodes() == before
    # Its health check never passed: Flower never gave it a node id, so no mark was made.
    assert "SuperNode ID" not in log and not is_connected(tmp_path / "rogue")


@pytest.mark.parametrize("trust", ["system roots", "another CA"])
def test_a_node_without_the_sandbox_ca_is_refused(
    federation: Federation, tmp_path: Path, trust: str
) -> None:
    pki.load_or_create_ca(tmp_path / "other-ca", "Some other CA")

    def change(argv: list[str]) -> list[str]:
        at = argv.index("--root-certificates")
        if trust == "system roots":
            return argv[:at] + argv[at + 2 :]
        return [*argv[: at + 1], str(tmp_path / "other-ca" / pki.CA_CERT), *argv[at + 2 :]]

    # TLS fails before any key is looked at: the node never reaches the SuperLink's API.
    code, log = _refused_node(federation, "stranger", change, tmp_path)
    assert code == 1, log
    assert "CERTIFICATE_VERIFY_FAILED" in log, log
    assert "2004" not in log, log


def test_a_node_running_unfiled_code_is_refused_and_records_it(
    federation: Federation, tmp_path: Path
) -> None:
    """One company's node runs code that differs from the filed bundle by one line: it
    refuses every task of the job and logs why; the job goes on with the other two."""
    engine = get_engine(federation.settings.database_url)
    altered_company = federation.companies[-1]
    copy_root = tmp_path / "altered-code"
    for name, folder in package_folders().items():
        shutil.copytree(folder, copy_root / name, ignore=shutil.ignore_patterns("__pycache__"))
    work = copy_root / "clients" / "work.py"
    work.write_text(work.read_text() + "\nUNFILED_CHANGE = True\n")
    altered = bundle_of({n: copy_root / n for n in package_folders()})
    assert altered.digest != running_bundle().digest

    paths = local.FederationPaths.of(federation.settings)
    state = federation.state
    record = state.nodes[altered_company]
    processes.stop_group(record.pid)
    node = NodeHome(federation.settings.company_dir(altered_company))
    home = paths.flwr_home(f"node-{altered_company}")
    env = commands.flower_env(home, database=False)
    env["PYTHONPATH"] = str(copy_root)
    record.pid = processes.spawn(
        commands.supernode_argv(
            state.address,
            local.ca_cert_path(federation.settings),
            node,
            altered_company,
            record.port,
        ),
        env,
        Path(record.log),
        cwd=home,
    )
    state.save(paths.state)  # so that `down` stops the replacement too
    cli = local.cli_for(federation.settings, state.address)
    registration.wait_online(cli, [n.node_id or "" for n in state.nodes.values()], 180)

    job = governed_job(
        federation.settings,
        federation.companies,
        rounds=1,
        local_epochs=1,
        min_participants=2,
        round_timeout_s=180,
    )
    done = federation.sandbox("federation", "run", job.id, "--timeout", "900", timeout=1000)
    assert done.returncode == 0, done.stdout + done.stderr

    (round_one,) = job_store.rounds_of(engine, job.id)
    honest = sorted(set(federation.companies) - {altered_company})
    assert round_one.took_part == honest
    # Refused in the set-up, the company has no baseline; its node refuses each round's task.
    missing = {m["company"]: m["reason"] for m in round_one.missing}
    assert "is not the code filed for job" in missing[altered_company]

    log = HashChainLog(node.local_log_path)
    assert log.verify().ok
    refusals = [
        line.event
        for line in log.read()
        if line.event.get("kind") == "refused" and line.event.get("job") == job.id
    ]
    assert {"evaluate", "train", "assess"} <= {r["task"] for r in refusals}
    for refusal in refusals:
        assert refusal["cause"] == "code-bundle"
        assert (
            job.bundle_hash[:16] in refusal["reason"] and altered.digest[:16] in refusal["reason"]
        )
    assert not any(
        line.event.get("kind") == "data-use" and line.event.get("job") == job.id
        for line in log.read()
    )
    # The coordinator passed the company's signed notices on: they are in the ledger.
    recorded = node_store.refusals_of(engine, company_id=altered_company, job_id=job.id)
    assert recorded and {r.cause for r in recorded} == {"code-bundle"}
    assert all(r.via == "coordinator" and r.ledger_index is not None for r in recorded)


FOREIGN_PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "curious-app"
version = "0.1.0"
license = "Apache-2.0"
dependencies = ["flwr==1.42.*"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "mallory"

[tool.flwr.app.components]
serverapp = "curious.server:app"
clientapp = "curious.client:app"

[tool.flwr.app.config]
out = ""
vault = ""
"""

FOREIGN_SERVER = """import json
import pathlib
import time

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    out = pathlib.Path(str(context.run_config["out"]))
    # At the coordinator's side, where it runs, it also tries a company's vault directly.
    try:
        pathlib.Path(str(context.run_config["vault"])).read_bytes()
    except OSError:
        pass
    deadline = time.monotonic() + 90
    nodes = list(grid.get_node_ids())
    while len(nodes) < 3 and time.monotonic() < deadline:
        time.sleep(1)
        nodes = list(grid.get_node_ids())
    ask = [
        Message(RecordDict({"config": ConfigRecord({"want": "vault"})}), dst_node_id=n,
                message_type=MessageType.QUERY)
        for n in nodes
    ]
    replies = grid.send_and_receive(ask, timeout=120)
    out.write_text(json.dumps([
        {"error": r.has_error(), "reason": r.error.reason if r.has_error() else ""}
        for r in replies
    ]))
"""

FOREIGN_CLIENT = """import json
import pathlib

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.query()
def query(message: Message, context: Context) -> Message:
    # Were this app to run at a company, it would say where the vault is.
    seen = {k: str(v) for k, v in context.node_config.items()}
    return Message(RecordDict({"seen": ConfigRecord({"config": json.dumps(seen)})}),
                   reply_to=message)
"""


def test_an_app_that_is_not_the_filed_app_never_runs_at_a_company(
    federation: Federation, tmp_path: Path
) -> None:
    """Mallory, who can reach the SuperLink's control API, submits her own Flower app: every
    company's node refuses it before it starts, logs and signs the refusal, and the company
    hands the notice to the ledger and lists it."""
    app_dir = tmp_path / "curious"
    (app_dir / "curious").mkdir(parents=True)
    (app_dir / "pyproject.toml").write_text(FOREIGN_PYPROJECT)
    (app_dir / "curious" / "__init__.py").write_text("")
    (app_dir / "curious" / "server.py").write_text(FOREIGN_SERVER)
    (app_dir / "curious" / "client.py").write_text(FOREIGN_CLIENT)
    out = tmp_path / "replies.json"
    victim = NodeHome(federation.settings.company_dir(federation.companies[0]))
    vault_file = next(p for p in (victim.folder / "vault").rglob("*") if p.is_file())
    cli = local.cli_for(federation.settings, federation.state.address)
    superlink = federation.state.superlink
    assert superlink is not None
    with watch_opens(superlink.pid, tmp_path / "superlink.strace") as opens:
        run_id = cli.run(app_dir, {"out": str(out), "vault": str(vault_file)})
        processes.wait_until(lambda: cli.status(run_id).finished, 400, "the foreign run", step=2.0)
    # The control of the coordinator-side watch: a read of a vault there is seen.
    assert str(vault_file.resolve()) in opens.under(federation.settings.home / "companies")
    replies = json.loads(out.read_text())
    assert len(replies) == len(federation.companies)
    assert all(r["error"] and "not the sandbox's filed app" in r["reason"] for r in replies)
    engine = get_engine(federation.settings.database_url)
    for company in federation.companies:
        node = NodeHome(federation.settings.company_dir(company))
        refused = [
            line.event
            for line in HashChainLog(node.local_log_path).read()
            if line.event.get("kind") == "refused" and line.event.get("run") == run_id
        ]
        assert [r["cause"] for r in refused] == ["app"], company
        # The company hands its notices over and lists them.
        listed = federation.sandbox("company", "refusals", company, "--deliver")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert "0 not delivered" in listed.stdout
        recorded = [
            r for r in node_store.refusals_of(engine, company_id=company) if r.cause == "app"
        ]
        assert recorded and recorded[0].via == "company" and recorded[0].ledger_index is not None


def test_a_spec_rewritten_in_the_database_never_reaches_a_company(
    federation: Federation,
) -> None:
    """Someone with the database rewrites a filed DP job's spec to train without DP. The
    coordinator's own participation policy (the tier needs DP) refuses every company, so
    the job stops and no node serves a task of it. (A coordinator that sends such plans
    anyway is refused by every node against the job's signed warrant:
    tests/adversarial/test_malicious_coordinator.py.)"""
    engine = get_engine(federation.settings.database_url)
    job = governed_job(
        federation.settings, federation.companies, rounds=1, local_epochs=1,
        min_participants=2, round_timeout_s=180, privacy=SMALL_DP,
    )  # fmt: skip
    spec = dict(job.spec)
    spec["privacy"] = {**spec["privacy"], "dp": None}
    with Session(engine) as session:
        row = session.get(Job, job.id)
        assert row is not None
        row.spec = spec
        session.add(row)
        session.commit()
    done = federation.sandbox("federation", "run", job.id, "--timeout", "600", timeout=700)
    assert done.returncode != 0  # the job could not run
    stopped = job_store.get_job(engine, job.id)
    assert stopped.status == "stopped", done.stdout + done.stderr
    assert "differential privacy" in " ".join(str(stopped.status_reason).split())
    for company in federation.companies:
        node = NodeHome(federation.settings.company_dir(company))
        events = [e.event for e in HashChainLog(node.local_log_path).read()]
        assert not [e for e in events if e.get("job") == job.id and e.get("kind") == "use"]


def test_down_stops_a_run_in_flight_and_leaves_no_process(federation: Federation) -> None:
    """A long job is running when `down` comes: its ServerApp lives in a detached session
    of its own, and must go with everything else."""
    state = federation.state
    job = governed_job(
        federation.settings,
        federation.companies,
        rounds=50,
        local_epochs=1,
        min_participants=2,
        privacy=SMALL_DP,
    )
    cli = local.cli_for(federation.settings, state.address)
    submitted: list[str] = []
    start_job(
        get_governance(federation.settings),
        EngineerFacts("engineer"),
        job.id,
        launch=lambda j: submitted.append(cli.run(APP_DIR, {"job-id": j})),
    )
    run_id = submitted[0]
    processes.wait_until(
        lambda: any(p.program == "flwr-serverapp" for p in ours(federation.settings, state.ports)),
        180,
        "the run's ServerApp process",
        step=1.0,
    )
    assert not cli.status(run_id).finished
    done = federation.sandbox("federation", "down", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no process left" in done.stdout and f"run {run_id}: stop sent" in done.stdout
    assert ours(federation.settings, state.ports) == []
    assert [p for p in state.ports if processes.port_open("127.0.0.1", p)] == []
    assert not local.FederationPaths.of(federation.settings).state.exists()
