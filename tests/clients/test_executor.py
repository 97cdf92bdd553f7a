"""The node's executor keeps the next task's process warm and hands it the task's token on a
pipe: the token never appears on a command line, and a spare that is not needed ends quietly."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from clients.executor import Launchers
from sandbox.protocol.bundle import code_root

# A stand-in launcher: it says it is ready, then writes the token it is handed to a file. The
# real one imports the node's code first, then serves the task with the token.
STAND_IN = (
    "import sys, pathlib; folder = pathlib.Path(sys.argv[1]); "
    "token = sys.stdin.readline().strip(); "
    "(folder / f'served-{token or \"nothing\"}').write_text(token)"
)


def _wait_for(path: Path, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return False


def test_a_task_goes_to_the_warm_launcher_by_pipe_and_the_next_one_is_started(
    tmp_path: Path,
) -> None:
    launchers = Launchers("127.0.0.1:1", tmp_path)
    launchers.command = [sys.executable, "-c", STAND_IN, str(tmp_path)]
    try:
        launchers.warm()
        spare = launchers.spare
        assert spare is not None and spare.poll() is None
        command_line = Path(f"/proc/{spare.pid}/cmdline").read_bytes()
        launchers.launch("secret-token-1")
        assert _wait_for(tmp_path / "served-secret-token-1")
        assert b"secret-token-1" not in command_line
        # The task went to the process started ahead; the next spare starts once it is done.
        assert launchers.running == [spare] and launchers.spare is None
        spare.wait(30)
        launchers.warm()
        assert launchers.running == [] and launchers.spare is not None
        assert launchers.spare.pid != spare.pid
        launchers.launch("secret-token-2")
        assert _wait_for(tmp_path / "served-secret-token-2")
    finally:
        launchers.stop()
    # Each token was served once; stopping closed the last spare's pipe and served nothing.
    served = {path.name for path in tmp_path.glob("served-*")} - {"served-nothing"}
    assert served == {"served-secret-token-1", "served-secret-token-2"}


def test_no_spare_warms_up_beside_a_running_task(tmp_path: Path) -> None:
    launchers = Launchers("127.0.0.1:1", tmp_path)
    # A task that is still running (it sleeps after taking its token).
    launchers.command = [
        sys.executable,
        "-c",
        "import sys, time; sys.stdin.readline(); time.sleep(60)",
    ]
    try:
        launchers.launch("a-long-task")
        launchers.warm()
        assert launchers.spare is None and len(launchers.running) == 1
    finally:
        launchers.stop()


def test_a_dead_spare_is_replaced_before_a_task_is_handed_over(tmp_path: Path) -> None:
    launchers = Launchers("127.0.0.1:1", tmp_path)
    launchers.command = [sys.executable, "-c", STAND_IN, str(tmp_path)]
    try:
        launchers.warm()
        assert launchers.spare is not None
        launchers.spare.kill()
        launchers.spare.wait(10)
        launchers.launch("after-a-crash")
        assert _wait_for(tmp_path / "served-after-a-crash")
    finally:
        launchers.stop()


def test_a_warm_launcher_whose_pipe_closes_ends_without_a_task(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "clients.executor",
            "task",
            "--runtime-api-address",
            "127.0.0.1:1",
            "--node-dir",
            str(tmp_path),
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(code_root()), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []
