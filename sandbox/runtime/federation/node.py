"""A company's node on the deployment engine, as one process group: the company's executor
(``clients.executor``, which runs the filed app and nothing else) and, in the same process
after it, the SuperNode (``--isolation process``: it starts no app itself).

``python -m sandbox.runtime.federation.node -- <supernode argv>`` starts the executor as a
child, then becomes the SuperNode; the executor ends when the SuperNode does, and stopping
the group stops both.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from sandbox.protocol.bundle import code_root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.runtime.federation.node")
    parser.add_argument("--node-dir", required=True, type=Path)
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("supernode", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    supernode = [a for a in args.supernode if a != "--"]
    env = {**os.environ, "PYTHONPATH": str(code_root())}
    subprocess.Popen(  # same session and group: stopped with the SuperNode
        [
            sys.executable,
            "-m",
            "clients.executor",
            "serve",
            "--runtime-api-address",
            args.runtime_api_address,
            "--node-dir",
            str(args.node_dir.resolve()),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
    )
    os.execve(supernode[0], supernode, env)


if __name__ == "__main__":
    main()
