"""Only the filed app runs at a company: the node's own executor for Flower's deployment engine.

The company's SuperNode runs with ``--isolation process``: it starts no app itself, and its
node config carries the company's id only, never the vault's location. This executor, the
company's own process, takes each task the SuperNode has for an app and starts the launcher
for it (``python -m clients.executor task …``, the counterpart of ``flwr-clientapp``). The
launcher pulls the task, and before anything of the app runs, compares the app bundle (FAB)
the SuperLink sent with the sandbox's filed app as this node has it installed (every file,
byte for byte): a different app never starts, never learns where the node folder is, and its
refusal is written to the node's log and signed as a notice. The filed app runs from the
node's own installed code (``clients.app``), whose bundle hash the gate checks against the
job's warrant before every task, with the node folder handed to it here.

Each task runs in a fresh process (nothing of one task's memory reaches the next), but the
executor keeps one launcher *warm*: started ahead, with the node's own code (``clients.app``,
torch, Flower) imported, waiting for its task's token on its standard input. A task then
starts in the time it takes to hand over a token instead of the seconds an import takes, and
the token never appears on a command line (which other users of the machine could read).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import subprocess
import sys
import threading
import time
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import IO

from flwr.app import Error, Message
from flwr.common.constant import SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest
from flwr.supercore.app_utils import start_parent_process_monitor
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

from sandbox.node.home import NodeHome
from sandbox.node.refusals import refuse
from sandbox.protocol.bundle import code_root
from sandbox.protocol.notices import attach

log = logging.getLogger("sandbox.node.executor")

CLIENT_APP_TASK = "flwr-clientapp"
APP_REFUSED = 403
FILED_APP = Path("sandbox") / "runtime" / "federation" / "flwrapp"
"""The filed Flower app's folder, relative to the installed code (the code bundle covers it)."""


def fab_files(fab: bytes) -> dict[str, bytes]:
    """The files of an app bundle (its own manifest aside)."""
    with zipfile.ZipFile(io.BytesIO(fab)) as archive:
        return {
            name: archive.read(name)
            for name in archive.namelist()
            if not name.startswith(".info/") and not name.endswith("/")
        }


@lru_cache(maxsize=1)
def filed_app_files() -> dict[str, bytes]:
    """The filed app as this node has it installed, bundled as ``flwr run`` bundles it."""
    from flwr.cli.build import build_fab_from_disk

    return fab_files(build_fab_from_disk(code_root() / FILED_APP))


def app_refusal(fab: bytes) -> str | None:
    """Why this node will not run the app in ``fab`` (None: it is the filed app)."""
    try:
        received = fab_files(fab)
    except (zipfile.BadZipFile, ValueError) as exc:
        return f"the app bundle is not a readable bundle ({exc})"
    expected = filed_app_files()
    differing = sorted(
        name
        for name in expected.keys() | received.keys()
        if expected.get(name) != received.get(name)
    )
    if differing:
        return (
            "the app is not the sandbox's filed app (it differs in "
            f"{', '.join(differing[:8])}); this node runs nothing else"
        )
    return None


# --------------------------------------------------------------------------------- a task
def run_task(runtime_api_address: str, token: str, node_dir: Path) -> int:
    """Serve one task of an app: the filed app's, or a refusal. Returns an exit code."""
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=True,
        root_certificates=None,
        interceptors=[
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
            RuntimeTokenHttpInterceptor(token),
        ],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    context = None
    status, details = SubStatus.FAILED, "the task failed"
    try:
        message, context, run, fab = pull_task_input(client)
        refusal = app_refusal(fab.content)
        if refusal is not None:
            node = NodeHome(node_dir)
            job = run.override_config.get("job-id")
            notice = refuse(
                node, "app", refusal, "app", job=str(job) if job else None, run=str(run.run_id)
            )
            reason = attach(
                f"refused by the company's node: {refusal}", notice.text, notice.signature
            )
            reply = Message(Error(code=APP_REFUSED, reason=reason), reply_to=message)
            details = refusal
        else:
            from clients.app import app  # imported already in a warm launcher

            context.node_config["node-dir"] = str(node_dir)
            reply = app(message=message, context=context)
            status, details = SubStatus.COMPLETED, ""
        push_message(client, reply, context)
        return 0
    except Exception as exc:  # the task fails; Flower's expiry handles the message
        log.error("task failed: %s: %s", type(exc).__name__, exc)
        details = f"{type(exc).__name__}: {exc}"[:500]
        return 1
    finally:
        push_task_output(client=client, context=context, sub_status=status, details=details)
        if heartbeat.is_running:
            heartbeat.stop()
        client.close()


def read_token(stream: IO[str]) -> str | None:
    """The task token a warm launcher is handed, or None when the executor closed the pipe
    without one (it is stopping)."""
    token = stream.readline().strip()
    return token or None


def warm_task(runtime_api_address: str, node_dir: Path) -> int:
    """A warm launcher: import the node's code now, then serve the task whose token arrives.
    Everything a task may need is imported, DP training's Opacus included: here the import
    costs the waiting spare, not the task."""
    import clients.app  # noqa: F401  (the imports are the warming)
    import sandbox.learning.dp  # noqa: F401

    token = read_token(sys.stdin)
    if token is None:
        return 0
    return run_task(runtime_api_address, token, node_dir)


class Launchers:
    """One launcher process per task, each handed its token on a pipe; the next one is
    started ahead (warm) whenever the node has no task running."""

    def __init__(self, runtime_api_address: str, node_dir: Path) -> None:
        self.command = [
            sys.executable,
            "-m",
            "clients.executor",
            "task",
            "--runtime-api-address",
            runtime_api_address,
            "--node-dir",
            str(node_dir),
        ]
        self.env = {**os.environ, "PYTHONPATH": str(code_root())}
        self.running: list[subprocess.Popen[str]] = []
        self.spare: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command, stdin=subprocess.PIPE, env=self.env, text=True)

    def warm(self) -> None:
        """Have a spare launcher ready (a new one if the last spare has died), once no task
        of this node is running: a spare warming up beside a task would take the task's CPU."""
        self.running = [c for c in self.running if c.poll() is None]
        if self.running:
            return
        if self.spare is None or self.spare.poll() is not None:
            self.spare = self._start()

    def launch(self, token: str) -> None:
        """Hand ``token`` to the spare launcher, or to one started now (cold) if there is
        none; the next spare starts when the node's tasks are done (:meth:`warm`)."""
        self.running = [c for c in self.running if c.poll() is None]
        if self.spare is None or self.spare.poll() is not None:
            self.spare = self._start()
        launcher, self.spare = self.spare, None
        try:
            self._hand(launcher, token)
        except OSError:  # it died in between: this task goes to a fresh one
            launcher = self._start()
            self._hand(launcher, token)
        self.running.append(launcher)

    @staticmethod
    def _hand(launcher: subprocess.Popen[str], token: str) -> None:
        assert launcher.stdin is not None
        launcher.stdin.write(token + "\n")
        launcher.stdin.close()

    def stop(self) -> None:
        for child in [*self.running, *([self.spare] if self.spare else [])]:
            if child.stdin is not None and not child.stdin.closed:
                child.stdin.close()
            child.terminate()


# -------------------------------------------------------------------------- the executor
def serve(
    runtime_api_address: str,
    node_dir: Path,
    poll_s: float = 0.5,
    stop: threading.Event | None = None,
) -> None:
    """Take the SuperNode's app tasks, one launcher process each, until ``stop``."""
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=True,
        root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    launchers = Launchers(runtime_api_address, node_dir)
    try:
        while stop is None or not stop.is_set():
            launchers.warm()
            try:
                answer = client.AcquireTask(
                    AcquireTaskRequest(
                        supported_task_types=[CLIENT_APP_TASK], agentapp_fab_hashes=[]
                    )
                )
            except Exception as exc:  # the SuperNode is starting or restarting: ask again
                log.debug("no task yet: %s", exc)
                time.sleep(poll_s)
                continue
            if answer.HasField("task") and answer.token:
                launchers.launch(answer.token)
                continue  # another task may be waiting: ask again at once
            time.sleep(poll_s)
    finally:
        launchers.stop()
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.executor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "task"):
        command = sub.add_parser(name)
        command.add_argument("--runtime-api-address", required=True)
        command.add_argument("--node-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    if args.command == "task":  # a launcher: its token comes on standard input
        return warm_task(args.runtime_api_address, args.node_dir.resolve())
    # The executor belongs to its SuperNode (its parent): it ends when the SuperNode does.
    start_parent_process_monitor(os.getppid())
    serve(args.runtime_api_address, args.node_dir.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
