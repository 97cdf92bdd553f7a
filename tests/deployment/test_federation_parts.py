"""The federation's parts that need no running Flower: argument lists, node config, state,
node keys, process bookkeeping, and the CLI's refusals. The running federation is in
``test_deployment.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sandbox.cli import app
from sandbox.config import Settings
from sandbox.errors import NotFound
from sandbox.governance import get_governance
from sandbox.identity import pki
from sandbox.node.home import NodeHome
from sandbox.registry import nodes as node_store
from sandbox.runtime.federation import commands, local, processes
from sandbox.runtime.federation.flwr_cli import toml_value
from sandbox.services import applications, nodes, principals
from tests.support.serving import serving
from tests.support.world import join


def words(text: str) -> str:
    return " ".join(text.split())


def test_run_config_values_are_quoted_toml_from_a_safe_alphabet() -> None:
    assert toml_value("job-1a2b") == '"job-1a2b"'
    assert toml_value(3) == "3" and toml_value(True) == "true"
    for bad in ('x" num-rounds=9 y="', "a b", "a\nb"):
        with pytest.raises(ValueError):
            toml_value(bad)


def test_node_config_names_the_company_and_never_its_folder() -> None:
    assert commands.node_config("acme") == 'company-id="acme"'
    with pytest.raises(commands.FederationError):
        commands.node_config('ac"me')


def test_a_node_is_its_executor_and_a_supernode_that_starts_no_app(tmp_path: Path) -> None:
    node = NodeHome(tmp_path / "acme")
    argv = commands.supernode_argv("127.0.0.1:9092", tmp_path / "ca.crt", node, "acme", 9300)
    assert argv[1:3] == ["-m", "sandbox.runtime.federation.node"]
    supernode = argv[argv.index("--") + 1 :]
    assert Path(supernode[0]).name == "flower-supernode"
    assert supernode[supernode.index("--isolation") + 1] == "process"
    assert supernode[supernode.index("--node-config") + 1] == 'company-id="acme"'
    assert "node-dir" not in " ".join(supernode)  # the vault's place is not Flower's to know
    assert argv[argv.index("--runtime-api-address") + 1] == "127.0.0.1:9300"


def test_the_processes_get_tls_auth_and_no_runtime_installs(tmp_path: Path) -> None:
    tls = pki.ServerTls(tmp_path / "tls")
    link = commands.superlink_argv(tls, "127.0.0.1", 9092, tmp_path / "link.db")
    assert Path(link[0]).name == "flower-superlink" and Path(link[0]).exists()
    for flag in (
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
        "--ssl-certfile",
        "--ssl-keyfile",
        "--ssl-ca-certfile",
    ):
        assert flag in link
    assert "--insecure" not in link
    node = NodeHome(tmp_path / "acme")
    argv = commands.supernode_argv("127.0.0.1:9092", tmp_path / "ca.crt", node, "acme", 9100)
    argv = argv[argv.index("--") + 1 :]
    assert Path(argv[0]).name == "flower-supernode" and "--insecure" not in argv
    assert argv[argv.index("--auth-supernode-private-key") + 1] == str(
        node.node_auth_key_path.resolve()
    )
    assert argv[argv.index("--root-certificates") + 1] == str((tmp_path / "ca.crt").resolve())
    # Every wait of the node is bounded.
    assert "--max-retries" in argv and "--max-wait-time" in argv


def test_a_node_never_gets_the_database_url(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SANDBOX_DATABASE_URL", "postgresql://u:secret@db/x")
    monkeypatch.setenv("SANDBOX_DATABASE_URL_FILE", "/run/secrets/database-url")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-flower")
    node_env = commands.flower_env(tmp_path, database=False)
    link_env = commands.flower_env(tmp_path)
    assert "SANDBOX_DATABASE_URL" not in node_env and "SANDBOX_DATABASE_URL" in link_env
    assert "SANDBOX_DATABASE_URL_FILE" not in node_env and "SANDBOX_DATABASE_URL_FILE" in link_env
    # Only what a Flower process needs is passed on: no other tool's credentials.
    assert "AWS_SECRET_ACCESS_KEY" not in node_env and "AWS_SECRET_ACCESS_KEY" not in link_env
    for env in (node_env, link_env):
        assert env["FLWR_TELEMETRY_ENABLED"] == "0" and env["FLWR_HOME"] == str(tmp_path)
        assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_state_round_trips(tmp_path: Path) -> None:
    state = local.FederationState(host="127.0.0.1")
    state.superlink = local.ProcessRecord(pid=10, port=9092, log="l")
    state.nodes["acme"] = local.ProcessRecord(pid=11, port=9100, log="n", node_id="42")
    state.save(tmp_path / "state.json")
    again = local.FederationState.load(tmp_path / "state.json")
    assert again == state and again is not None
    assert again.address == "127.0.0.1:9092" and again.ports == [9092, 9100]


def test_process_groups_are_stopped_and_helpers_found_by_port_and_home(tmp_path: Path) -> None:
    """A stand-in for a Flower helper: a process named flwr-clientapp that names a port and
    carries an FLWR_HOME, started in its own session like Flower starts its helpers."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    program = fake_bin / "flwr-clientapp"
    program.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(120)\n")
    program.chmod(0o755)
    port = processes.free_port()
    home = tmp_path / "federation" / "flwr" / "node-x"
    pid = processes.spawn(
        [str(program), "--clientappio-api-address", f"127.0.0.1:{port}"],
        {**os.environ, "FLWR_HOME": str(home)},
        tmp_path / "helper.log",
    )
    try:
        processes.wait_until(
            lambda: any(p.pid == pid for p in processes.flower_processes()), 30, "helper seen"
        )
        running = processes.flower_processes()
        assert [p.pid for p in processes.naming_ports(running, [port])] == [pid]
        assert [p.pid for p in processes.flwr_home_under(running, tmp_path / "federation")] == [pid]
        assert processes.naming_ports(running, [processes.free_port()]) == []
        assert processes.group_members(pid) == [pid]
        assert processes.stop_group(pid, timeout=10).startswith("stopped")
        assert not processes.alive(pid)
    finally:
        if processes.alive(pid):
            os.killpg(pid, signal.SIGKILL)


def test_a_bounded_wait_says_what_it_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(processes.WaitTimeout, match="the moon"):
        processes.wait_until(lambda: False, 0.3, "the moon", step=0.1)
    assert time.monotonic() - started < 5


def test_node_keys_are_made_at_the_node_and_recorded_in_the_registry(
    sandbox_home: Settings, engine
) -> None:
    (company,) = join(sandbox_home, engine, ["Construction"], rows=60)
    runner = CliRunner()
    first = runner.invoke(app, ["federation", "node-key", company])
    assert first.exit_code == 0, first.output
    node = NodeHome(sandbox_home.company_dir(company))
    public = pki.read_node_private_key_public_line(node.node_auth_key_path)
    record = node_store.get_node_key(engine, company)
    assert record.public_key == public and record.fingerprint in words(first.output)
    again = runner.invoke(app, ["federation", "node-key", company])
    assert again.exit_code == 0 and node_store.get_node_key(engine, company).public_key == public
    # A node folder holding another key than the registry's is refused, not re-registered.
    node.node_auth_key_path.unlink()
    refused = runner.invoke(app, ["federation", "node-key", company])
    assert refused.exit_code == 1 and "another node key" in words(refused.output)
    rotated = runner.invoke(app, ["federation", "node-key", company, "--replace"])
    assert rotated.exit_code == 0, rotated.output
    current = pki.read_node_private_key_public_line(node.node_auth_key_path)
    assert node_store.get_node_key(engine, company).public_key == current
    assert sorted(p.name for p in node.node_auth_key_path.parent.iterdir()) == [
        "company.key",
        "node-auth.key",
        "node-auth.key.pub",
    ]


def test_node_keys_across_machines(sandbox_home: Settings, engine, tmp_path: Path) -> None:
    """The company makes its key without a database; the operator records the public line."""
    (company,) = join(sandbox_home, engine, ["Education"], rows=60)
    runner = CliRunner()
    made = runner.invoke(app, ["federation", "node-key", company, "--no-record"])
    assert made.exit_code == 0, made.output
    node = NodeHome(sandbox_home.company_dir(company))
    public = pki.read_node_private_key_public_line(node.node_auth_key_path)
    assert public in words(made.output)
    with pytest.raises(NotFound):
        node_store.get_node_key(engine, company)
    sent = tmp_path / "sent.pub"
    sent.write_text(pki.public_key_path(node.node_auth_key_path).read_text())
    recorded = runner.invoke(app, ["federation", "node-key", company, "--public-key", str(sent)])
    assert recorded.exit_code == 0, recorded.output
    assert node_store.get_node_key(engine, company).public_key == public
    # Another company's key is refused, and the company's own stays registered.
    other = pki.generate_node_auth_key(tmp_path / "other.key", "x")
    (other_company,) = join(sandbox_home, engine, ["Construction"], rows=60)
    gov = get_governance(sandbox_home)
    nodes.record_node_key(gov, principals.operator(gov), other_company, other)
    sent.write_text(other)
    taken = runner.invoke(app, ["federation", "node-key", company, "--public-key", str(sent)])
    assert taken.exit_code == 1 and "another company's" in words(taken.output)
    assert node_store.get_node_key(engine, company).public_key == public


def test_the_cli_refuses_what_it_cannot_do(sandbox_home: Settings, engine) -> None:
    runner = CliRunner()
    down = runner.invoke(app, ["federation", "down"])
    assert down.exit_code == 0 and "no federation is up" in down.output
    assert "no federation is up" in runner.invoke(app, ["federation", "status"]).output
    for args in (["run", "job-x"], ["ping"], ["register"]):
        result = runner.invoke(app, ["federation", *args])
        assert result.exit_code == 1 and "no local federation is up" in words(result.output)
    empty = runner.invoke(app, ["federation", "up", "--timeout", "10"])
    assert empty.exit_code == 1 and "no company" in words(empty.output)
    certs = runner.invoke(app, ["federation", "certs", "--hostname", "superlink"])
    assert certs.exit_code == 0, certs.output
    tls = local.FederationPaths.of(sandbox_home).tls
    assert {"superlink", "localhost", "127.0.0.1", "::1"} == tls.names()
    kept = runner.invoke(app, ["federation", "certs", "--hostname", "superlink"])
    assert "kept" in kept.output


def test_a_node_command_refuses_a_key_others_can_read(sandbox_home: Settings, engine) -> None:
    (company,) = join(sandbox_home, engine, ["Construction"], rows=60)
    runner = CliRunner()
    assert runner.invoke(app, ["federation", "node-key", company]).exit_code == 0
    key = NodeHome(sandbox_home.company_dir(company)).node_auth_key_path
    key.chmod(0o644)
    result = runner.invoke(app, ["federation", "node", company])
    assert result.exit_code == 1 and "readable by others" in words(result.output)
    other = runner.invoke(
        app, ["federation", "node", "someone-else", "--node-dir", str(key.parents[1])]
    )
    assert other.exit_code == 1 and f"node folder of {company}" in words(other.output)


def test_the_bundle_command_prints_the_running_hash() -> None:
    from sandbox.protocol.bundle import running_bundle

    result = subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "federation", "bundle"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert result.returncode == 0 and running_bundle().digest in words(result.stdout)


def test_a_demo_company_joins_through_the_api_once_with_its_node_key(
    sandbox_home: Settings, engine, tmp_path: Path
) -> None:
    runner = CliRunner()
    keys = tmp_path / "node-keys"
    with serving(sandbox_home) as api:
        args = ["federation", "demo-company", "Retail trade", "--rows", "60", "--purpose", "p1"]
        args += ["--api", api, "--node-keys", str(keys)]
        first = runner.invoke(app, args)
        assert first.exit_code == 0, first.output
        assert f"retail-trade applied to join with 60 rows through {api}" in words(first.output)
        node = NodeHome(sandbox_home.company_dir("retail-trade"))
        public = pki.read_node_private_key_public_line(node.node_auth_key_path)
        assert (keys / "retail-trade.pub").read_text().strip() == public
        assert [c.purpose for c in node.consents()] == ["p1"]  # its own record of its consent
        again = runner.invoke(app, args)
        assert again.exit_code == 0 and "already applied" in words(again.output)
        refused = runner.invoke(
            app,
            [
                *args[:2],
                "Construction",
                "--purpose",
                "bad id",
                "--api",
                api,
                "--node-keys",
                str(keys),
            ],
        )
        assert refused.exit_code == 1 and "refused the join" in words(refused.output)
        assert not sandbox_home.company_dir("construction").exists()  # nothing left behind
    gov = get_governance(sandbox_home)
    applied = [e.record.action for e in gov.ledger.entries(company="retail-trade")]
    assert "company.applied" in applied and "company.joined" not in applied
    [pending] = applications.list_applications(gov, principals.operator(gov))
    applications.admit(gov, principals.operator(gov), pending.id)
    joined = [e.record.action for e in gov.ledger.entries(company="retail-trade")]
    assert "company.joined" in joined and "company.admitted" in joined
    unknown = runner.invoke(
        app, ["federation", "demo-company", "Piracy", "--api", api, "--node-keys", str(keys)]
    )
    assert unknown.exit_code == 1 and "unknown industry" in words(unknown.output)
