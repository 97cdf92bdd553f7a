"""How the federation's processes are started: the Flower programs beside this Python, the
environment every Flower process gets, and the command lines of the SuperLink and of a
company's SuperNode."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from sandbox.identity import pki
from sandbox.node.home import NodeHome
from sandbox.protocol.bundle import code_root

DEFAULT_PORT = 9092
LOOPBACK = "127.0.0.1"
NODE_MAX_RETRIES = 10
NODE_MAX_WAIT_S = 120
_NODE_CONFIG_VALUE = re.compile(r"^[A-Za-z0-9._/@+-]+$")


class FederationError(RuntimeError):
    """The federation cannot be started, reached or stopped as asked; the message says why."""


Step = Callable[[str], None]


def flower_program(name: str) -> str:
    """The absolute path of a Flower program beside this Python (the venv's ``bin``)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FederationError(f"{name} is not installed beside {sys.executable} nor on PATH")
    return found


PASSED_ON = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR", "TEMP", "TMP", "VIRTUAL_ENV",
     "PYTHONPATH", "PYTHONHASHSEED", "PYTHONUNBUFFERED", "SSL_CERT_FILE", "SSL_CERT_DIR"}
)  # fmt: skip
"""The environment variables a Flower process inherits (with :data:`PASSED_ON_PREFIXES`)."""
PASSED_ON_PREFIXES = ("SANDBOX_", "FLWR_", "LC_", "OMP_", "MKL_", "TORCH_", "COVERAGE_")


def flower_env(
    flwr_home: Path, extra: Mapping[str, str] | None = None, database: bool = True
) -> dict[str, str]:
    """The environment of a Flower process: this venv's ``bin`` first on PATH (the SuperLink
    and SuperNodes start ``flower-superexec`` by name), this process's code first on
    PYTHONPATH (so the apps they load are the code this command runs), no telemetry, no
    update check, and its own ``FLWR_HOME``. Nothing else of this process's environment is
    passed on but what :data:`PASSED_ON` names (no credentials of other tools reach the apps
    Flower starts). ``database=False`` keeps the database URL out (a company's node never
    needs it)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key in PASSED_ON or key.startswith(PASSED_ON_PREFIXES)
    }
    if not database:
        env.pop("SANDBOX_DATABASE_URL", None)
        env.pop("SANDBOX_DATABASE_URL_FILE", None)
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


def node_config(company_id: str) -> str:
    """``--node-config`` for a company's node: its id only. The node folder (the vault's
    location) is never in it: the company's executor hands it to the filed app alone."""
    if not _NODE_CONFIG_VALUE.match(company_id):
        raise FederationError(
            f"{company_id!r} cannot travel in Flower's node config (spaces or quotes)"
        )
    return f'company-id="{company_id}"'


def supernode_argv(
    superlink: str,
    ca_cert: Path,
    node: NodeHome,
    company_id: str,
    port: int,
    host: str = LOOPBACK,
) -> list[str]:
    """A company's node: its executor (which runs the filed app only) and its SuperNode,
    which trusts only the sandbox CA, authenticates with the company's node key, carries the
    company id as node config and starts no app itself (``--isolation process``).
    ``--host/--port`` is the node's own local API, which only its executor uses."""
    return [
        sys.executable,
        "-m",
        "sandbox.runtime.federation.node",
        "--node-dir",
        str(node.folder.resolve()),
        "--runtime-api-address",
        f"{host}:{port}",
        "--",
        flower_program("flower-supernode"),
        "--isolation",
        "process",
        "--superlink",
        superlink,
        "--root-certificates",
        str(ca_cert.resolve()),
        "--auth-supernode-private-key",
        str(node.node_auth_key_path.resolve()),
        "--node-config",
        node_config(company_id),
        "--host",
        host,
        "--port",
        str(port),
        "--max-retries",
        str(NODE_MAX_RETRIES),
        "--max-wait-time",
        str(NODE_MAX_WAIT_S),
    ]
