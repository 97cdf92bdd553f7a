"""Load on the service over loopback, bounded: 32 clients query the audit log and file jobs
at once against a real `sandbox serve`; no request fails, and the ledger their decisions were
appended to is gapless and verifies. (`benchmarks/load.py` runs the same for 60 s.)"""

from __future__ import annotations

import pytest

from benchmarks.load import run

pytestmark = pytest.mark.slow


def test_32_clients_at_once_lose_nothing(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SANDBOX_HOME", str(tmp_path / "unused"))
    result = run(clients=32, seconds=8.0, max_requests=1500)
    assert result["errors"] == 0, result["error_samples"]
    assert result["requests"] >= 100
    assert set(result["kinds"]) == {"audit listing", "entry with proof", "checkpoint", "file job"}
    assert result["ledger"]["gapless"] and result["ledger"]["verifies"]
    assert result["ledger"]["entries"] > result["requests"]  # every request's decision is in it
