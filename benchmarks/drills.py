"""Reliability drills shared by the tests and ``benchmarks/reliability.py``: companies that
drop out or time out, a coordinator killed mid-job. Each returns what happened, as data; the
tests assert on it and the benchmark reports it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.faults import fails, failure_kind, faulty_client_app
from policies.facts import EngineerFacts

ROOT = Path(__file__).resolve().parents[1]
PURPOSE = "income-prediction"
LOW_AND_MEDIUM = [
    "Construction",
    "Education",
    "Transportation",
    "Retail trade",
    "Manufacturing-durable goods",
    "Wholesale trade",
]

RUNNER = """
import sys
from sandbox.runtime.simulation import run_on_simulation
from sandbox.config import load_settings
run_on_simulation(load_settings(), sys.argv[1])
"""


def join(settings: Any, industries: list[str], rows: int) -> list[str]:
    from sandbox.data import census
    from sandbox.governance import get_governance
    from sandbox.services.companies import join as join_company

    gov = get_governance(settings)
    ids = []
    for industry in industries:
        company = census.slug(industry)
        join_company(
            gov,
            settings.company_dir(company),
            company,
            industry,
            census.company_table(industry, rows=rows, seed=1),
            (PURPOSE,),
        )
        ids.append(company)
    return ids


def governed_job(settings: Any, companies: list[str], **fields: Any) -> str:
    from sandbox.governance import get_governance
    from sandbox.protocol.jobspec import JobSpec
    from sandbox.services.jobs import file_job

    spec = JobSpec.model_validate(
        {
            "purpose": PURPOSE,
            "companies": companies,
            "min_participants": 3,
            "privacy": {"dp": {"epsilon": 2.0}},
            **fields,
        }
    )
    filed = file_job(get_governance(settings), spec, EngineerFacts("engineer"))
    if not filed.allowed:
        raise RuntimeError(f"not admitted: {filed.reasons}")
    return filed.job.id


def dropout_drill(
    settings: Any, fraction: float = 0.3, seed: int = 7, rounds: int = 3, rows: int = 200
) -> dict[str, Any]:
    """Six companies; in each round a seeded ``fraction`` of them drops out (an error) or
    answers after the round's timeout. The job must go on while three remain, and every
    round's record must name exactly the companies that failed, and why."""
    from sandbox.db import get_engine
    from sandbox.governance import get_governance
    from sandbox.registry import jobs as job_store
    from sandbox.runtime.simulation import run_jobs_on_simulation

    companies = join(settings, LOW_AND_MEDIUM, rows)
    # A late company keeps one of the simulation's workers asleep; four workers (half a CPU
    # each) and a round timeout well above an honest reply keep the others on time.
    job = governed_job(settings, companies, rounds=rounds, local_epochs=1, round_timeout_s=20.0)
    expected = {
        r: sorted(c for c in companies if fails(job, r, c, fraction, seed))
        for r in range(1, rounds + 1)
    }
    kinds = {r: {c: failure_kind(job, r, c, "mixed", seed) for c in expected[r]} for r in expected}
    app = partial(faulty_client_app, fraction=fraction, mode="mixed", seed=seed, delay_s=24.0)
    started = time.monotonic()
    outcome = run_jobs_on_simulation(settings, [job], company_app=app, client_cpus=0.5)[job]
    seconds = time.monotonic() - started
    records = job_store.rounds_of(get_engine(settings.database_url), job)
    entries = [json.loads(e.entry) for e in get_governance(settings).ledger.iter_entries()]
    ledger_rounds = {r["round"]: r for r in entries if r["action"].startswith("round.")}
    stop_at = next((r for r in expected if len(companies) - len(expected[r]) < 3), None)
    return {
        "companies": companies,
        "job": job,
        "fraction": fraction,
        "expected_failures": expected,
        "failure_kinds": kinds,
        "status": outcome["status"],
        "reason": outcome["reason"],
        "expected_stop_round": stop_at,
        "seconds": round(seconds, 1),
        "rounds": [
            {
                "number": r.number,
                "status": r.status,
                "took_part": r.took_part,
                "missing": {m["company"]: m["reason"] for m in r.missing},
                "ledger_missing": sorted(
                    ledger_rounds.get(r.number, {}).get("details", {}).get("missing", [])
                ),
            }
            for r in records
        ],
    }


def kill_and_resume_drill(
    settings: Any, rounds: int = 6, kill_after: int = 2, rows: int = 200
) -> dict[str, Any]:
    """A coordinator (and its simulation) is SIGKILLed once ``kill_after`` rounds are done;
    a new one resumes the job from its last completed round."""
    from sandbox.db import dispose_engines, get_engine
    from sandbox.governance import get_governance
    from sandbox.registry import jobs as job_store

    companies = join(settings, LOW_AND_MEDIUM[:4], rows)
    job = governed_job(settings, companies, rounds=rounds, local_epochs=1)
    engine = get_engine(settings.database_url)
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
            if job_store.get_job(engine, job).rounds_completed >= kill_after:
                break
            if first.poll() is not None:
                raise RuntimeError("the coordinator ended before it could be killed")
            time.sleep(0.2)
        else:
            raise RuntimeError(f"the job did not complete {kill_after} rounds in time")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the coordinator and its simulation, no warning
        first.wait(timeout=30)
    killed = job_store.get_job(engine, job)
    dispose_engines()
    started = time.monotonic()
    second = subprocess.run(
        [sys.executable, "-c", RUNNER, job], cwd=ROOT, env=env, timeout=600, capture_output=True
    )
    resume_seconds = time.monotonic() - started
    engine = get_engine(settings.database_url)
    final = job_store.get_job(engine, job)
    ledger = get_governance(settings).ledger
    entries = [json.loads(e.entry) for e in ledger.iter_entries()]
    completed = [r["round"] for r in entries if r["action"] == "round.completed"]
    return {
        "job": job,
        "rounds": rounds,
        "killed_after_rounds": killed.rounds_completed,
        "status_when_killed": killed.status,
        "resume_exit_code": second.returncode,
        "resume_stderr_tail": second.stderr.decode(errors="replace")[-1500:],
        "resume_seconds": round(resume_seconds, 1),
        "final_status": final.status,
        "final_reason": final.status_reason,
        "round_numbers": [r.number for r in job_store.rounds_of(engine, job)],
        "ledger_completed_rounds": completed,
        "models_trained": [r["action"] for r in entries].count("model.trained"),
        "ledger_verifies": ledger.verify().ok,
    }
