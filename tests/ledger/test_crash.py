"""The process writing the ledger is killed (SIGKILL) in the middle of heavy appends: every
acknowledged entry is there, the log verifies, and no checkpoint covers an entry that was
not committed. On SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox.config import Settings
from sandbox.db import dispose_engines, get_engine
from sandbox.identity import sandbox_key
from sandbox.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]


def kill_mid_append(
    database_url: str, settings: Settings, acks_before_kill: int
) -> tuple[dict[int, str], list[int]]:
    """Run the writer until it has acknowledged ``acks_before_kill`` appends, then SIGKILL it
    (without warning, between or during commits). Returns what it acknowledged."""
    sandbox_key(settings.keys_dir, "operator")  # the writer and the checker share the key
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    writer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.ledger.crash_writer",
            database_url,
            str(settings.keys_dir),
            settings.ledger_origin,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acknowledged: dict[int, str] = {}
    checkpoints: list[int] = []
    deadline = time.monotonic() + 120
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
    assert writer.returncode == -signal.SIGKILL, writer.stderr.read() if writer.stderr else ""
    assert len(acknowledged) >= acks_before_kill, "the writer did not get far enough"
    return acknowledged, checkpoints


def check_after_crash(database_url: str, settings: Settings, acknowledged: dict[int, str]) -> None:
    dispose_engines()
    ledger = Ledger(
        get_engine(database_url), sandbox_key(settings.keys_dir, "operator"), settings.ledger_origin
    )
    report = ledger.verify()
    assert report.ok, report.problems
    assert report.size >= max(acknowledged) + 1
    for index, record_id in acknowledged.items():
        assert ledger.entry(index).record.record_id == record_id
    for checkpoint in ledger.checkpoints():
        assert checkpoint.checkpoint.size <= report.size
    # The log takes appends again after the crash.
    from tests.ledger.helpers import make_record

    after = ledger.append(make_record(10**6, record_id="after-the-crash"))
    assert after.index == report.size
    ledger.checkpoint()
    assert ledger.verify().ok


@pytest.mark.parametrize("acks", [150, 413])
def test_sqlite_writer_killed_mid_append(tmp_settings: Settings, acks: int) -> None:
    acknowledged, _ = kill_mid_append(tmp_settings.database_url, tmp_settings, acks)
    check_after_crash(tmp_settings.database_url, tmp_settings, acknowledged)


@pytest.mark.postgres
def test_postgres_writer_killed_mid_append(tmp_settings: Settings, pg_url: str) -> None:
    acknowledged, _ = kill_mid_append(pg_url, tmp_settings, 300)
    check_after_crash(pg_url, tmp_settings, acknowledged)
