"""Reliability drills: companies that drop out or time out mid-round, and a coordinator killed
(SIGKILL) mid-job that resumes after its last completed round."""

from __future__ import annotations

import pytest

from benchmarks.drills import dropout_drill, kill_and_resume_drill
from sandbox.config import Settings

pytestmark = pytest.mark.slow


def test_companies_that_drop_out_or_time_out_are_named_and_the_job_goes_on(
    sandbox_home: Settings,
) -> None:
    drill = dropout_drill(sandbox_home)
    expected = drill["expected_failures"]
    assert any(expected.values()), "the drill must make someone fail"
    if drill["expected_stop_round"] is None:
        assert drill["status"] == "completed", drill["reason"]
        assert [r["number"] for r in drill["rounds"]] == sorted(expected)
    else:
        assert drill["status"] == "stopped"
        assert f"round {drill['expected_stop_round']}" in drill["reason"]
    for record in drill["rounds"]:
        failed = expected[record["number"]]
        assert sorted(record["missing"]) == failed
        assert record["took_part"] == sorted(set(drill["companies"]) - set(failed))
        for company, reason in record["missing"].items():
            if drill["failure_kinds"][record["number"]][company] == "drop":
                assert "dropped out" in reason, reason
            else:
                assert "no reply" in reason or "expired" in reason, reason
        assert record["ledger_missing"] == failed  # the ledger names them too


def test_a_coordinator_killed_mid_job_resumes_after_its_last_completed_round(
    sandbox_home: Settings,
) -> None:
    drill = kill_and_resume_drill(sandbox_home, rounds=6, kill_after=2)
    assert 2 <= drill["killed_after_rounds"] < 6 and drill["status_when_killed"] == "running"
    assert drill["resume_exit_code"] == 0, drill["resume_stderr_tail"]
    assert drill["final_status"] == "completed", drill["final_reason"]
    assert drill["round_numbers"] == list(range(1, 7)), "no round twice, none lost"
    assert sorted(drill["ledger_completed_rounds"]) == list(range(1, 7))
    assert len(drill["ledger_completed_rounds"]) == 6
    assert drill["models_trained"] == 1
    assert drill["ledger_verifies"]
