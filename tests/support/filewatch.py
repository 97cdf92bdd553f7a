"""Every file a process tree opens, seen from outside it: ``strace`` attached to a running
process (and every process it starts from then on) logs each ``open``/``openat`` call, native
reads included (pyarrow's, numpy's), which a Python audit hook inside the process would miss.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

_OPEN = re.compile(r'open(?:at2?)?\((?:[^,]+, )?"([^"]+)"')


@dataclass
class Opens:
    paths: list[str] = field(default_factory=list)

    def under(self, root: Path) -> list[str]:
        prefix = str(root.resolve())
        return sorted({p for p in self.paths if p.startswith(prefix)})


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process descended from it now (from ``/proc``)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


@contextmanager
def watch_opens(pid: int, log: Path) -> Iterator[Opens]:
    """Record the paths that ``pid`` and its descendants open while the block runs: those
    running when the watch starts (the SuperLink's SuperExec, say) and those they start."""
    strace = shutil.which("strace")
    if strace is None:
        raise RuntimeError("strace is not installed (scripts/ensure-system-packages installs it)")
    attach = [arg for each in process_tree(pid) for arg in ("-p", str(each))]
    tracer = subprocess.Popen(
        [strace, "-f", "-qq", "-e", "trace=open,openat,openat2", "-o", str(log), *attach],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while not log.exists() and time.monotonic() < deadline:  # attached once it writes
        time.sleep(0.1)
    time.sleep(0.5)
    found = Opens()
    try:
        yield found
    finally:
        tracer.send_signal(signal.SIGINT)  # detach: the traced processes go on
        try:
            tracer.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(tracer.pid, signal.SIGKILL)
            tracer.wait()
        text = log.read_text(errors="replace") if log.exists() else ""
        found.paths.extend(_OPEN.findall(text))
