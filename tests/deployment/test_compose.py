"""``docker-compose.yml`` against the Compose Specification, and against this project: every
command it runs exists (with its options), every port and path lines up, every volume is
declared and each company's volume is its own. No Docker engine is needed."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import typer
import yaml

from sandbox.cli import app
from sandbox.data import census
from sandbox.identity import pki

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).resolve().parents[1] / "data" / "compose-spec.json"
IN_IMAGE = Path("/app")  # where the Dockerfile puts the repository's deploy/ folder
# Commands the compose file runs that another branch adds. Each is checked like any other
# as soon as it exists; until then its check is an expected failure that names the branch.
ARRIVING = {("serve",): "`sandbox serve` (the API and console) comes with the API work"}


def load() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


COMPOSE_DOC = load()
SERVICES: dict[str, dict[str, Any]] = COMPOSE_DOC["services"]
OURS = {name: s for name, s in SERVICES.items() if "build" in s}


def sandbox_commands() -> list[tuple[str, str, list[str]]]:
    """(service, where, argv) for every `sandbox` command the compose file runs."""
    found = []
    for name, service in SERVICES.items():
        command = service.get("command")
        if isinstance(command, list) and command[:1] == ["sandbox"]:
            found.append((name, "command", command))
        test = (service.get("healthcheck") or {}).get("test")
        if isinstance(test, list) and test[:2] == ["CMD", "sandbox"]:
            found.append((name, "healthcheck", test[1:]))
    return found


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Mount target → volume name (short syntax)."""
    out = {}
    for entry in service.get("volumes", []):
        source, target, *_ = entry.split(":")
        out[target] = source
    return out


def test_the_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(COMPOSE_DOC), key=str)
    assert errors == [], [f"{list(e.path)}: {e.message}" for e in errors]


def test_the_schema_check_catches_a_broken_file() -> None:
    schema = json.loads(SCHEMA.read_text())
    broken = load()
    broken["services"]["superlink"]["comand"] = broken["services"]["superlink"].pop("command")
    broken["services"]["api"]["ports"] = "8000:8000"
    assert len(list(jsonschema.Draft7Validator(schema).iter_errors(broken))) >= 2


@pytest.mark.parametrize(
    ("service", "where", "argv"),
    sandbox_commands(),
    ids=[f"{s}-{w}" for s, w, _ in sandbox_commands()],
)
def test_every_sandbox_command_exists_with_its_options(
    service: str, where: str, argv: list[str]
) -> None:
    command: click.Command = typer.main.get_command(app)
    path: list[str] = []
    rest = argv[1:]
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.commands.get(rest[0])
        if sub is None:
            missing = (*path, rest[0])
            if missing in ARRIVING:
                pytest.xfail(ARRIVING[missing])
            pytest.fail(f"{service} {where}: `sandbox {' '.join(missing)}` does not exist")
        path.append(rest[0])
        command, rest = sub, rest[1:]
    assert not isinstance(command, click.Group), f"{service}: `{shlex.join(argv)}` is a group"
    # Click parses the arguments exactly as it would in the container: unknown options,
    # missing arguments, wrong types and out-of-range numbers all raise here.
    command.make_context(f"sandbox {' '.join(path)}", list(rest))


def test_the_sandbox_program_is_installed_by_the_project() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["sandbox"] == "sandbox.cli:main"


def test_paths_in_commands_exist_in_the_image_or_a_mounted_volume() -> None:
    for name, _, argv in sandbox_commands():
        targets = mounts(SERVICES[name])
        for arg in argv:
            if not arg.startswith("/"):
                continue
            if Path(arg).is_relative_to(IN_IMAGE):
                assert (ROOT / Path(arg).relative_to(IN_IMAGE)).exists(), f"{name}: {arg}"
            elif Path(arg).is_relative_to("/run/secrets"):
                assert Path(arg).name in SERVICES[name]["secrets"], f"{name}: {arg}"
            else:
                assert any(Path(arg).is_relative_to(t) for t in targets), (
                    f"{name}: {arg} is neither in the image nor in a volume mounted there"
                )


def test_the_tls_files_flow_from_certs_to_their_users_only() -> None:
    certs = SERVICES["certs"]["command"]
    written = mounts(SERVICES["certs"])
    ca_volume = written[option(certs, "--ca-dir")]
    tls_volume = written[option(certs, "--out")]
    public_volume = written[option(certs, "--public-dir")]
    assert "superlink" in certs[certs.index("--hostname") + 1 :]
    for name, service in SERVICES.items():
        used = set(mounts(service).values())
        if name != "certs":
            assert ca_volume not in used, f"{name} mounts the CA's private key"
        if name not in ("certs", "superlink"):
            assert tls_volume not in used, f"{name} mounts the SuperLink's private key"
    link = SERVICES["superlink"]
    assert mounts(link)[option(link["command"], "--tls-dir")] == tls_volume
    for name, _, argv in sandbox_commands():
        if "--ca" in argv:
            ca = Path(option(argv, "--ca"))
            assert ca.name == pki.PUBLIC_CA
            volume = mounts(SERVICES[name])[str(ca.parent)]
            assert volume in (public_volume, tls_volume), f"{name}: {ca}"


def test_ports_line_up() -> None:
    link_port = option(SERVICES["superlink"]["command"], "--port")
    for name, service in SERVICES.items():
        argv = service.get("command") or []
        for published in service.get("ports", []):
            container_port = str(published).rsplit(":", 1)[1]
            assert container_port == option(argv, "--port"), f"{name}: {published}"
            host_var = re.match(r"(?:127\.0\.0\.1:)?\$\{(\w+):-(\d+)\}", str(published))
            assert host_var and host_var.group(2) == container_port, f"{name}: {published}"
        for _, _, cmd in [c for c in sandbox_commands() if c[0] == name]:
            if "--superlink" in cmd:
                host, port = option(cmd, "--superlink").rsplit(":", 1)
                assert port == link_port, f"{name} talks to port {port}"
                assert host in ("superlink", "127.0.0.1") and (host == "superlink") == (
                    name != "superlink"
                )
    api_health = " ".join(SERVICES["api"]["healthcheck"]["test"])
    assert f"127.0.0.1:{option(SERVICES['api']['command'], '--port')}/health" in api_health
    for name, service in SERVICES.items():
        if name.startswith("node-"):
            # Healthy means connected to the SuperLink and authenticated by it.
            company = service["command"][3]
            assert service["healthcheck"]["test"] == [
                "CMD", "sandbox", "federation", "node-health", company
            ]  # fmt: skip
            assert "ports" not in service, f"{name} must not be reachable from outside"


def test_healthcheck_code_compiles() -> None:
    for name, service in SERVICES.items():
        test = (service.get("healthcheck") or {}).get("test", [])
        if test[:3] == ["CMD", "python", "-c"]:
            compile(test[3], f"{name}-healthcheck", "exec")


def test_each_company_has_its_own_node_volume_key_and_no_database() -> None:
    nodes = {n: s for n, s in SERVICES.items() if n.startswith("node-")}
    assert len(nodes) >= 3
    seen_volumes = set()
    for name, node in nodes.items():
        company = node["command"][3]
        assert name == f"node-{company}"
        home = node["environment"]["SANDBOX_HOME"]
        volume = mounts(node)[home]
        assert volume not in seen_volumes
        seen_volumes.add(volume)
        # Only the company's own containers mount its volume.
        users = {n for n, s in SERVICES.items() if volume in mounts(s).values()}
        assert users == {name, f"company-{company}"}, users
        joiner = SERVICES[f"company-{company}"]
        assert mounts(joiner)[joiner["environment"]["SANDBOX_HOME"]] == volume
        assert census.slug(joiner["command"][3]) == company
        assert "SANDBOX_DATABASE_URL" not in node["environment"]
        assert node["depends_on"]["register"]["condition"] == "service_completed_successfully"
    job = (ROOT / "deploy" / "demo-job.toml").read_text()
    spec = tomllib.loads(job)
    assert sorted(spec["companies"]) == sorted(n.removeprefix("node-") for n in nodes)


def test_the_coordinators_container_has_no_vault_mounted() -> None:
    """The ServerApp runs in the SuperLink's container (and the API's worker in the API's):
    neither mounts any company's node volume, so no vault is there to read."""
    node_volumes = {mounts(s)[s["environment"]["SANDBOX_HOME"]]
                    for n, s in SERVICES.items() if n.startswith("node-")}  # fmt: skip
    assert node_volumes
    for coordinator_side in ("superlink", "api", "migrate", "register"):
        assert not set(mounts(SERVICES[coordinator_side]).values()) & node_volumes


def test_start_order_uses_health_and_completion() -> None:
    for name, service in SERVICES.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in SERVICES, f"{name} depends on a missing service {target}"
            other = SERVICES[target]
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in other, f"{target} has no health check"
            else:
                assert rule["condition"] == "service_completed_successfully"
                assert other.get("restart") == "no", f"{target} is not a one-shot"
    long_running = [n for n, s in OURS.items() if s.get("restart") == "unless-stopped"]
    assert all("healthcheck" in SERVICES[n] for n in long_running)
    assert set(SERVICES["job"]["depends_on"]) >= {"api"} | {
        n for n in SERVICES if n.startswith("node-")
    }


def test_every_volume_is_declared_and_used() -> None:
    declared = set(COMPOSE_DOC["volumes"])
    used = {v for s in SERVICES.values() for v in mounts(s).values()}
    assert used == declared


def test_every_variable_has_a_value_in_the_env_example() -> None:
    text = COMPOSE.read_text()
    variables = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
    example = (ROOT / ".env.example").read_text()
    defined = set(re.findall(r"^(\w+)=", example, re.MULTILINE))
    assert variables and variables <= defined, variables - defined


def test_the_image_installs_cpu_torch_first_and_makes_the_mount_points() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.splitlines()[
        next(i for i, line in enumerate(dockerfile.splitlines()) if line.startswith("FROM"))
    ] == ("FROM python:3.11-slim")
    torch_at = dockerfile.index("torch==2.13.0")
    assert "download.pytorch.org/whl/cpu" in dockerfile[: torch_at + 20]
    assert torch_at < dockerfile.index("pip install --no-deps -r requirements.lock")
    assert dockerfile.index("requirements.lock") < dockerfile.index("pip install --no-deps .")
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies a missing {source}"
    for name, service in OURS.items():
        for target in mounts(service):
            assert re.search(rf"mkdir -p[^\n]*\s{re.escape(target)}(\s|$)", dockerfile), (
                f"{name} mounts {target}, which the image does not create"
            )
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".sandbox" in ignored


def networks(service: dict[str, Any]) -> set[str]:
    return set(service.get("networks") or ())


def test_the_control_api_is_published_on_loopback_only() -> None:
    """The SuperLink's one port also serves Flower's unauthenticated Control API: nobody on
    the network may reach it; the nodes in this file reach it on the `fleet` network."""
    [published] = SERVICES["superlink"]["ports"]
    assert str(published).startswith("127.0.0.1:"), published
    for name, service in SERVICES.items():
        if name != "superlink" and "--superlink" in (service.get("command") or []):
            assert "fleet" in networks(service), name


def test_secrets_are_files_not_environment_variables() -> None:
    declared = COMPOSE_DOC["secrets"]
    assert set(declared) == {
        "postgres-password",
        "database-url",
        "app-password",
        "app-database-url",
    }
    for name, service in SERVICES.items():
        environment = service.get("environment") or {}
        for key, value in environment.items():
            assert "PASSWORD" not in key or key.endswith("_FILE"), (name, key)
            assert "postgresql://" not in str(value), (name, key)
            if "PASSWORD" in key or "DATABASE" in key:
                assert str(value).startswith("/run/secrets/"), (name, key)
                secret = str(value).removeprefix("/run/secrets/")
                assert secret in declared and secret in service["secrets"], (name, key)
    assert COMPOSE_DOC["secrets"]["database-url"]["environment"] == "SANDBOX_DATABASE_URL"


def test_companies_are_on_networks_without_the_database() -> None:
    database = networks(SERVICES["postgres"])
    assert database == {"db"} and COMPOSE_DOC["networks"]["db"]["internal"] is True
    companies = {n: s for n, s in SERVICES.items() if n.startswith(("node-", "company-"))}
    assert len(companies) >= 6
    for name, service in companies.items():
        assert networks(service) and not networks(service) & database, name
    # Whoever needs the database has the secret and the network; no one else has either.
    for name, service in SERVICES.items():
        needs = "SANDBOX_DATABASE_URL_FILE" in (service.get("environment") or {})
        assert needs == ("db" in networks(service)) or name == "postgres", name


def test_the_database_url_can_come_from_a_secret_file(tmp_path: Path, monkeypatch: Any) -> None:
    from sandbox.config import load_settings

    secret = tmp_path / "database-url"
    secret.write_text("postgresql://sandbox:s3cret@postgres:5432/sandbox\n")
    monkeypatch.setenv("SANDBOX_DATABASE_URL_FILE", str(secret))
    monkeypatch.setenv("SANDBOX_DATABASE_URL", "sqlite:///ignored.db")
    assert load_settings().database_url == "postgresql://sandbox:s3cret@postgres:5432/sandbox"
    monkeypatch.setenv("SANDBOX_DATABASE_URL_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="SANDBOX_DATABASE_URL_FILE"):
        load_settings()


def test_the_image_installs_exactly_the_locked_dependencies() -> None:
    """Every runtime dependency the project names is pinned (==) in the lock, which lives in
    the `sandbox` package, so the code bundle filed with a job covers it."""
    from sandbox.protocol.bundle import running_bundle

    lock = (ROOT / "sandbox" / "requirements.lock").read_text().splitlines()
    pinned = {
        re.sub(r"[-_.]+", "-", line.split("==")[0]).lower(): line.split("==")[1]
        for line in lock
        if line and not line.startswith("#")
    }
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", v) for v in pinned.values())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.sub(r"[-_.]+", "-", re.split(r"[\[=<>~ ]", requirement)[0]).lower()
        assert name == "torch" or name in pinned, f"{name} is not in the lock"
    assert "torch" not in pinned  # pinned in the Dockerfile, from the CPU index
    assert "sandbox/requirements.lock" in dict(running_bundle().files)


def test_no_server_container_mounts_a_private_key_of_a_regulator_or_a_company() -> None:
    """The regulator's key is made in `regulator-private`, which only the `regulator` service
    (standing for the regulator's own machine, with no network) mounts; the servers read its
    public folder, read-only, and no company's node volume."""
    regulator = SERVICES["regulator"]
    assert regulator["network_mode"] == "none"
    key_file = option(regulator["command"], "--key-file")
    private = mounts(regulator)[str(Path(key_file).parent)]
    public_dir = option(regulator["command"], "--public-dir")
    assert {n for n, s in SERVICES.items() if private in mounts(s).values()} == {"regulator"}
    company_volumes = {mounts(s)[s["environment"]["SANDBOX_HOME"]]
                       for n, s in SERVICES.items() if n.startswith("node-")}  # fmt: skip
    servers = {n: s for n, s in OURS.items() if "db" in networks(s) and n != "migrate"}
    assert set(servers) >= {"api", "superlink", "register", "job"}
    for name, service in servers.items():
        assert not set(mounts(service).values()) & (company_volumes | {private}), name
        public_file = service["environment"]["SANDBOX_REGULATOR_PUBLIC_KEY_FILE"]
        assert public_file == f"{public_dir}/regulator.pub"
        [entry] = [v for v in service["volumes"] if v.split(":")[1] == public_dir]
        assert entry.endswith(":ro"), (name, entry)
    assert SERVICES["migrate"]["depends_on"]["regulator"]["condition"] == (
        "service_completed_successfully"
    )
    assert not set(mounts(SERVICES["migrate"]).values()) & {private}


def test_only_migrate_connects_as_the_owner() -> None:
    """The owner's URL (which may change the schema and rewrite the ledger) reaches `migrate`
    alone, which sets up the application role every other service connects as."""
    for name, service in OURS.items():
        url_file = (service.get("environment") or {}).get("SANDBOX_DATABASE_URL_FILE")
        if name == "migrate":
            assert url_file == "/run/secrets/database-url"
            assert set(service["secrets"]) == {"database-url", "app-password"}
            argv = service["command"]
            assert option(argv, "--app-password-file") == "/run/secrets/app-password"
            assert option(argv, "--app-role").startswith("${SANDBOX_APP_ROLE")
        else:
            assert "database-url" not in (service.get("secrets") or []), name
            if url_file is not None:
                assert url_file == "/run/secrets/app-database-url", name
    example = (ROOT / ".env.example").read_text()
    assert "SANDBOX_APP_DATABASE_URL=postgresql://sandbox_app:" in example
