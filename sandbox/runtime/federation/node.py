"""A company's node on the deployment engine, as one process group: the company's executor
(``clients.executor``, which runs the filed app and nothing else) and the SuperNode
(``--isolation process``: it starts no app itself).

``python -m sandbox.runtime.federation.node -- <supernode argv>`` starts the executor, then
the SuperNode, and watches the SuperNode's log: once the SuperLink has authenticated the node
(Flower logs the node id it was given, which it does only after the node's key was accepted)
the file :data:`CONNECTED_FILE` in the node folder says so, with the node id and the time; it
is removed when the node starts and when it stops. A health check that reads it means
"authenticated by the SuperLink since this start", not merely "the process is up" (Flower
reconnects on its own; a node that can no longer reach the SuperLink keeps the mark until it
stops, and the SuperLink's own view, `sandbox federation status`, says whether it is online). Signals that stop this
process stop both children; the node's exit status is the SuperNode's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import IO

from sandbox.protocol.bundle import code_root
from sandbox.utc import rfc3339, utcnow

CONNECTED_FILE = "supernode-connected.json"
_NODE_ID_LINE = re.compile(r"SuperNode ID: (\d+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def connected_node_id(line: str) -> int | None:
    """The node id in a SuperNode log line that reports its authenticated connection."""
    found = _NODE_ID_LINE.search(_ANSI.sub("", line))
    return int(found.group(1)) if found else None


def mark_connected(node_dir: Path, node_id: int) -> None:
    marker = node_dir / CONNECTED_FILE
    temporary = marker.with_suffix(".tmp")
    temporary.write_text(json.dumps({"node_id": node_id, "since": rfc3339(utcnow())}) + "\n")
    temporary.replace(marker)


def is_connected(node_dir: Path) -> bool:
    """True once this node's SuperNode has been authenticated by the SuperLink (and not
    stopped since)."""
    try:
        return int(json.loads((node_dir / CONNECTED_FILE).read_text())["node_id"]) > 0
    except (OSError, ValueError, KeyError, TypeError):
        return False


def follow(log: IO[bytes], node_dir: Path, out: IO[bytes]) -> None:
    """Pass the SuperNode's log on to ``out``, marking the node connected when it says so."""
    for raw in iter(log.readline, b""):
        out.write(raw)
        out.flush()
        node_id = connected_node_id(raw.decode("utf-8", "replace"))
        if node_id is not None:
            mark_connected(node_dir, node_id)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.runtime.federation.node")
    parser.add_argument("--node-dir", required=True, type=Path)
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("supernode", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    node_dir: Path = args.node_dir.resolve()
    supernode = [a for a in args.supernode if a != "--"]
    env = {**os.environ, "PYTHONPATH": str(code_root())}
    (node_dir / CONNECTED_FILE).unlink(missing_ok=True)
    executor = subprocess.Popen(
        [sys.executable, "-m", "clients.executor", "serve", "--runtime-api-address",
         args.runtime_api_address, "--node-dir", str(node_dir)],
        env=env,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    node = subprocess.Popen(
        supernode, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip

    def stop(signum: int, _frame: FrameType | None) -> None:
        for child in (node, executor):
            if child.poll() is None:
                child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    try:
        assert node.stdout is not None
        follow(node.stdout, node_dir, sys.stdout.buffer)
        code = node.wait()
    finally:
        (node_dir / CONNECTED_FILE).unlink(missing_ok=True)
        for child in (node, executor):
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
    sys.exit(code)


if __name__ == "__main__":
    main()
