"""The ledger crash drill: the process writing the ledger is killed (SIGKILL) in the middle
of heavy appends; every acknowledged entry must be there, the log must verify, and no
checkpoint may cover an entry that was not committed.

Run by ``benchmarks/reliability.py`` and by ``tests/ledger/test_crash.py``. The writer is
this module run as a program: ``python -m benchmarks.ledger_drills DATABASE_URL KEYS ORIGIN``
prints ``ack <index> <record_id>`` once each append has committed and ``cp <size>`` once each
checkpoint is signed, flushing every line, so the drill knows exactly what was acknowledged.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.ledger import make_record
from sandbox.config import Settings
from sandbox.db import dispose_engines, get_engine
from sandbox.identity import sandbox_key
from sandbox.ledger import Ledger, signer_state_path

ROOT = Path(__file__).resolve().parents[1]
WRITER_DEADLINE_S = 120


class DrillFailed(AssertionError):
    """The drill found something lost, or could not run as planned."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise DrillFailed(message)


def kill_mid_append(
    database_url: str, settings: Settings, acks_before_kill: int
) -> tuple[dict[int, str], list[int]]:
    """Run the writer until it has acknowledged ``acks_before_kill`` appends, then SIGKILL it
    (without warning, between or during commits). Returns what it acknowledged and the sizes
    of the checkpoints it signed."""
    sandbox_key(settings.keys_dir, "operator")  # the writer and the checker share the key
    writer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.ledger_drills",
            database_url,
            str(settings.keys_dir),
            settings.ledger_origin,
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acknowledged: dict[int, str] = {}
    checkpoints: list[int] = []
    deadline = time.monotonic() + WRITER_DEADLINE_S
    try:
        assert writer.stdout is not None
        for line in writer.stdout:
            kind, *rest = line.split()
            if kind == "ack":
                acknowledged[int(rest[0])] = rest[1]
            elif kind == "cp":
                checkpoints.append(int(rest[0]))
            if len(acknowledged) >= acks_before_kill or time.monotonic() > deadline:
                break
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait(timeout=30)
    errors = writer.stderr.read() if writer.stderr else ""
    _require(writer.returncode == -signal.SIGKILL, f"the writer ended by itself: {errors}")
    _require(len(acknowledged) >= acks_before_kill, "the writer did not get far enough")
    return acknowledged, checkpoints


def check_after_crash(database_url: str, settings: Settings, acknowledged: dict[int, str]) -> None:
    """Everything acknowledged is there, the log verifies, and it takes appends again."""
    dispose_engines()
    ledger = Ledger(
        get_engine(database_url),
        sandbox_key(settings.keys_dir, "operator"),
        settings.ledger_origin,
        signer_state_path(settings.keys_dir),
    )
    report = ledger.verify()
    _require(report.ok, f"the ledger does not verify after the crash: {report.problems}")
    _require(report.size >= max(acknowledged) + 1, "acknowledged entries are missing")
    for index, record_id in acknowledged.items():
        found = ledger.entry(index).record.record_id
        _require(found == record_id, f"entry {index} is {found}, acknowledged as {record_id}")
    for checkpoint in ledger.checkpoints():
        _require(
            checkpoint.checkpoint.size <= report.size,
            f"a checkpoint covers {checkpoint.checkpoint.size} entries; the log holds "
            f"{report.size}",
        )
    after = ledger.append(make_record(10**6).model_copy(update={"record_id": "after-the-crash"}))
    _require(after.index == report.size, "the append after the crash went elsewhere")
    ledger.checkpoint()
    _require(ledger.verify().ok, "the ledger does not verify after the next append")


# The writer's threads: they share one ledger, so their appends go through its group commit.
WRITER_THREADS = 4


def write_until_killed(database_url: str, keys_dir: str, origin: str) -> None:
    ledger = Ledger(
        get_engine(database_url),
        sandbox_key(Path(keys_dir), "operator"),
        origin,
        signer_state_path(Path(keys_dir)),
    )
    printing = threading.Lock()

    def say(line: str) -> None:
        with printing:
            print(line, flush=True)

    def writer(thread: int) -> None:
        number = thread * 10**8
        while True:
            if number % 3 == 2:
                batch = [make_record(number + i) for i in range(10)]
                for item in ledger.append_many(batch):
                    say(f"ack {item.index} {item.record_id}")
                number += 10
            else:
                item = ledger.append(make_record(number))
                say(f"ack {item.index} {item.record_id}")
                number += 1
            if number % 25 < 10 and thread == 0:
                checkpoint = ledger.checkpoint()
                say(f"cp {checkpoint.checkpoint.size}")

    threads = [
        threading.Thread(target=writer, args=(t,), daemon=True) for t in range(WRITER_THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    write_until_killed(*sys.argv[1:4])
