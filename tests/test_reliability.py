"""Reliability drills: companies that drop out or time out mid-round, and a coordinator killed
(SIGKILL) mid-job that resumes after its last completed round."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from benchmarks.faults import fails, failure_kind, faulty_client_app
from coordinator.simulation import run_jobs_on_simulation
from sandbox.config import Settings
from sandbox.db import dispose_engines
from sandbox.governance import get_governance
from sandbox.jobspec import JobSpec
from sandbox.operations import file_job
from sandbox.registry import service
from tests.helpers import join

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
LOW_AND_MEDIUM = [
    "Construction",
    "Education",
    "Transportation",
    "Retail trade",
    "Manufacturing-durable goods",
    "Wholesale trade",
]


def governed_job(settings: Settings, companies: list[str], **fields) -> str:  # type: ignore[no-untyped-def]
    spec = JobSpec.model_validate(
        {
            "purpose": "income-prediction",
            "companies": companies,
            "min_participants": 3,
            "privacy": {"dp": {"epsilon": 2.0}},
            **fields,
        }
    )
    filed = file_job(get_governance(settings), spec, engineer="engineer")
    assert filed.allowed, filed.reasons
    return filed.job.id


def test_companies_that_drop_out_or_time_out_are_named_and_the_job_goes_on(
    sandbox_home: Settings, engine
) -> None:
    companies = join(sandbox_home, engine, LOW_AND_MEDIUM, rows=200)
    fraction, seed, rounds = 0.3, 7, 3
    job = governed_job(sandbox_home, companies, rounds=rounds, local_epochs=1, round_timeout_s=8.0)
    expected = {
        r: {c for c in companies if fails(job, r, c, fraction, seed)} for r in range(1, rounds + 1)
    }
    app = partial(faulty_client_app, fraction=fraction, mode="mixed", seed=seed, delay_s=12.0)
    outcome = run_jobs_on_simulation(sandbox_home, [job], client_app=app)[job]
    records = service.job_rounds(engine, job)
    stop_at = next((r for r in range(1, rounds + 1) if len(companies) - len(expected[r]) < 3), None)
    if stop_at is None:
        assert outcome["status"] == "completed", outcome
        assert [r.number for r in records] == list(range(1, rounds + 1))
    else:
        assert outcome["status"] == "stopped" and f"round {stop_at}" in outcome["reason"]
    assert any(expected.values()), "the drill must make someone fail"
    for record in records:
        missing = {m["company"]: m["reason"] for m in record.missing}
        assert set(missing) == expected[record.number]
        assert record.took_part == sorted(set(companies) - expected[record.number])
        for company, reason in missing.items():
            kind = failure_kind(job, record.number, company, "mixed", seed)
            assert (
                ("dropped out" in reason)
                if kind == "drop"
                else ("no reply" in reason or "expired" in reason)
            ), reason
    # The ledger names them too.
    entries = [json.loads(e.entry) for e in get_governance(sandbox_home).ledger.iter_entries()]
    rounds_in_ledger = {r["round"]: r for r in entries if r["action"].startswith("round.")}
    for record in records:
        assert sorted(rounds_in_ledger[record.number]["details"]["missing"]) == sorted(
            expected[record.number]
        )


RUNNER = """
import sys
from coordinator.simulation import run_on_simulation
from sandbox.config import load_settings
run_on_simulation(load_settings(), sys.argv[1])
"""


def test_a_coordinator_killed_mid_job_resumes_after_its_last_completed_round(
    sandbox_home: Settings, engine
) -> None:
    companies = join(sandbox_home, engine, LOW_AND_MEDIUM[:4], rows=200)
    rounds = 6
    job = governed_job(sandbox_home, companies, rounds=rounds, local_epochs=1)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    first = subprocess.Popen(
        [sys.executable, "-c", RUNNER, job],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if service.get_job(engine, job).rounds_completed >= 2:
                break
            assert first.poll() is None, "the coordinator ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("the job did not complete two rounds in time")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the coordinator and its simulation, no warning
        first.wait(timeout=30)
    killed_after = service.get_job(engine, job).rounds_completed
    assert 2 <= killed_after < rounds
    assert service.get_job(engine, job).status == "running"

    dispose_engines()
    second = subprocess.run(
        [sys.executable, "-c", RUNNER, job], cwd=ROOT, env=env, timeout=600, capture_output=True
    )
    assert second.returncode == 0, second.stderr.decode()[-2000:]
    final = service.get_job(engine, job)
    assert final.status == "completed", final.status_reason
    records = service.job_rounds(engine, job)
    assert [r.number for r in records] == list(range(1, rounds + 1)), "no round twice, none lost"
    ledger = get_governance(sandbox_home).ledger
    entries = [json.loads(e.entry) for e in ledger.iter_entries()]
    completed = [r["round"] for r in entries if r["action"] == "round.completed"]
    assert sorted(completed) == list(range(1, rounds + 1))
    assert len(completed) == len(set(completed))
    assert [r["action"] for r in entries].count("model.trained") == 1
    assert ledger.verify().ok
