"""The process writing the ledger is killed (SIGKILL) in the middle of heavy appends: every
acknowledged entry is there, the log verifies, and no checkpoint covers an entry that was
not committed. On SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest

from benchmarks.ledger_drills import check_after_crash, kill_mid_append
from sandbox.config import Settings


@pytest.mark.parametrize("acks", [150, 413])
def test_sqlite_writer_killed_mid_append(tmp_settings: Settings, acks: int) -> None:
    acknowledged, _ = kill_mid_append(tmp_settings.database_url, tmp_settings, acks)
    check_after_crash(tmp_settings.database_url, tmp_settings, acknowledged)


@pytest.mark.postgres
def test_postgres_writer_killed_mid_append(tmp_settings: Settings, pg_url: str) -> None:
    acknowledged, _ = kill_mid_append(pg_url, tmp_settings, 300)
    check_after_crash(pg_url, tmp_settings, acknowledged)
