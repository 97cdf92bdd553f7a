"""Local processes of a federation: start each in its own session, find, stop, leave none.

Every long-lived process (the SuperLink, each SuperNode) is started with
``start_new_session=True``, so its pid is also its process-group id and the whole group can
be signalled at once. Flower starts its own helpers (``flower-superexec``, and one
``flwr-serverapp``/``flwr-clientapp`` per run or message) in *detached* sessions, outside
those groups; they are found by scanning ``/proc`` for Flower programs that name one of
the federation's ports, and killed by pid. Output goes to log files, never to pipes: a
helper that outlives its parent would otherwise hold the pipe open.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

FLOWER_PROGRAMS = (
    "flower-superlink",
    "flower-supernode",
    "flower-superexec",
    "flwr-serverapp",
    "flwr-clientapp",
)


class WaitTimeout(TimeoutError):
    """A bounded wait ran out."""


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.5
) -> float:
    """Poll ``predicate`` until it holds; seconds waited. Raises WaitTimeout after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise WaitTimeout(f"{what}: not reached within {timeout:.0f} s")
        time.sleep(step)
    return time.monotonic() - started


def spawn(argv: list[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None) -> int:
    """Start ``argv`` in a new session with its output appended to ``log_path``; its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    return process.pid


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) of ``pid``, or None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, finished but not yet reaped, does not count)."""
    found = _stat(pid)
    return found is not None and found[0] not in ("Z", "X")


def reap(pid: int) -> None:
    """Collect the exit status of our own child so that it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            found = _stat(int(entry.name))
            if found is not None and found[1] == pgid and found[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def stop_group(pgid: int, timeout: float = 15.0) -> str:
    """SIGTERM the group, then SIGKILL whatever is left after ``timeout``; what happened."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        reap(pgid)
        return "already gone"
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        reap(pgid)
        if not group_members(pgid):
            return f"stopped in {time.monotonic() - started:.1f} s"
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    time.sleep(0.5)
    reap(pgid)
    return f"killed after {timeout:.0f} s"


@dataclass(frozen=True)
class FlowerProcess:
    pid: int
    program: str
    args: tuple[str, ...]


def _cmdline(pid: int) -> tuple[str, ...]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ()
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def flower_processes() -> list[FlowerProcess]:
    """Every live Flower process on this machine (by program name in its command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        args = _cmdline(pid)
        if not args or not alive(pid):
            continue
        for program in FLOWER_PROGRAMS:
            if any(Path(arg).name == program for arg in args[:3]):
                found.append(FlowerProcess(pid, program, args))
                break
    return found


def naming_ports(processes: Iterable[FlowerProcess], ports: Iterable[int]) -> list[FlowerProcess]:
    """The processes whose arguments name one of ``ports`` (``host:port`` or ``--port N``)."""
    wanted = {str(p) for p in ports}
    out = []
    for process in processes:
        args = process.args
        named = {a.rsplit(":", 1)[1] for a in args if ":" in a and a.rsplit(":", 1)[1].isdigit()}
        named |= {args[i + 1] for i, a in enumerate(args[:-1]) if a == "--port"}
        if named & wanted:
            out.append(process)
    return out


def flwr_home_under(processes: Iterable[FlowerProcess], root: Path) -> list[FlowerProcess]:
    """The processes whose ``FLWR_HOME`` lies under ``root``: everything a federation started
    inherits its own, so this finds helpers whatever ports they name."""
    prefix = f"FLWR_HOME={root.resolve()}".encode()
    out = []
    for process in processes:
        try:
            environ = Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if any(item.startswith(prefix) for item in environ):
            out.append(process)
    return out


def kill_processes(processes: Iterable[FlowerProcess], timeout: float = 10.0) -> list[str]:
    """SIGTERM each, SIGKILL the ones still alive after ``timeout``; a line per process."""
    processes = list(processes)
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
    started = time.monotonic()
    while time.monotonic() - started < timeout and any(alive(p.pid) for p in processes):
        for process in processes:
            reap(process.pid)
        time.sleep(0.2)
    lines = []
    for process in processes:
        if alive(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            lines.append(f"{process.program} (pid {process.pid}) killed")
        else:
            lines.append(f"{process.program} (pid {process.pid}) stopped")
        reap(process.pid)
    return lines


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, without terminal colour codes."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return "\n".join(text.strip().splitlines()[-lines:])
