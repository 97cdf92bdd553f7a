"""Reliability report: faults, load and bad input, each drill a line of the report.

    python -m benchmarks.reliability                  # every drill
    python -m benchmarks.reliability --only dropouts kill load

Drills: companies that drop out or time out mid-round; the coordinator SIGKILLed mid-job and
resumed; the ledger's writer SIGKILLed during heavy appends, on SQLite and on PostgreSQL;
32 clients loading the service for 60 s; bad input of every kind, fuzzed. Writes
benchmarks/results/reliability.json and reliability.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import add_quick_flag, isolated_home, machine, write_results

ROOT = Path(__file__).resolve().parents[1]
DRILLS = ("dropouts", "kill", "ledger-sqlite", "ledger-postgres", "load", "fuzz")
# The smoke run: the drills that need neither PostgreSQL nor a minute of load.
QUICK_DRILLS = ("ledger-sqlite",)


def dropouts() -> dict[str, Any]:
    from benchmarks.drills import dropout_drill
    from sandbox.config import load_settings

    with isolated_home("reliability-dropouts"):
        drill = dropout_drill(load_settings())
    named = all(
        sorted(r["missing"]) == drill["expected_failures"][r["number"]] for r in drill["rounds"]
    )
    in_ledger = all(
        r["ledger_missing"] == drill["expected_failures"][r["number"]] for r in drill["rounds"]
    )
    ok = (
        named
        and in_ledger
        and (drill["status"] == "completed") == (drill["expected_stop_round"] is None)
    )
    failures = sum(len(v) for v in drill["expected_failures"].values())
    return {
        "ok": ok,
        "summary": (
            f"{failures} failures over {len(drill['expected_failures'])} rounds of 6 companies "
            f"(30 % per round, drop-outs and time-outs); job {drill['status']}; every round "
            f"names who was missing: {named}; the ledger too: {in_ledger}; {drill['seconds']} s"
        ),
        "detail": drill,
    }


def kill() -> dict[str, Any]:
    from benchmarks.drills import kill_and_resume_drill
    from sandbox.config import load_settings

    with isolated_home("reliability-kill"):
        drill = kill_and_resume_drill(load_settings())
    ok = (
        drill["final_status"] == "completed"
        and drill["round_numbers"] == list(range(1, drill["rounds"] + 1))
        and sorted(drill["ledger_completed_rounds"]) == drill["round_numbers"]
        and drill["ledger_verifies"]
    )
    return {
        "ok": ok,
        "summary": (
            f"killed after round {drill['killed_after_rounds']} of {drill['rounds']}; resumed and "
            f"{drill['final_status']} in {drill['resume_seconds']} s; rounds recorded "
            f"{drill['round_numbers']} (none twice); ledger verifies: {drill['ledger_verifies']}"
        ),
        "detail": drill,
    }


def ledger_crash(postgres: bool) -> dict[str, Any]:
    from benchmarks.ledger_drills import check_after_crash, kill_mid_append
    from sandbox.config import load_settings

    results = []
    with isolated_home(f"reliability-ledger-{'pg' if postgres else 'sqlite'}"):
        settings = load_settings()
        for acks in (500, 1500, 3000):
            if postgres:
                url = _fresh_postgres()
            else:
                url = f"sqlite:///{settings.home / f'ledger-{acks}.db'}"
            started = time.monotonic()
            acknowledged, checkpoints = kill_mid_append(url, settings, acks)
            check_after_crash(url, settings, acknowledged)  # raises when anything is lost
            results.append(
                {
                    "acknowledged": len(acknowledged),
                    "checkpoints_signed": len(checkpoints),
                    "seconds": round(time.monotonic() - started, 1),
                }
            )
    return {
        "ok": True,
        "summary": (
            f"{len(results)} kills during appends ({', '.join(str(r['acknowledged']) for r in results)} "
            "acknowledged): every acknowledged entry present, the log verifies, no checkpoint "
            "beyond the committed size, appends resume"
        ),
        "detail": results,
    }


def _fresh_postgres() -> str:
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    admin_url = os.environ.get(
        "SANDBOX_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    )
    name = f"sandbox_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def load() -> dict[str, Any]:
    from benchmarks.load import run

    result = run(clients=32, seconds=60.0, max_requests=200_000)
    ok = result["errors"] == 0 and result["ledger"]["gapless"] and result["ledger"]["verifies"]
    return {
        "ok": ok,
        "summary": (
            f"32 clients for {result['seconds']} s: {result['requests']} requests, "
            f"{result['throughput_per_s']}/s, p50 {result['all']['p50_ms']} ms, p99 "
            f"{result['all']['p99_ms']} ms, {result['errors']} errors; ledger of "
            f"{result['ledger']['entries']} entries gapless and verifies: "
            f"{result['ledger']['gapless'] and result['ledger']['verifies']}"
        ),
        "detail": result,
    }


def fuzz(examples: int = 300) -> dict[str, Any]:
    env = dict(os.environ, SANDBOX_FUZZ_EXAMPLES=str(examples), PYTHONPATH=str(ROOT))
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/services/test_fuzz.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-500:]
    return {
        "ok": done.returncode == 0,
        "summary": (
            f"{examples} generated inputs each of manifests, data files (joined when valid), job "
            f"specs, policy files and audit bundles: {tail} ({time.monotonic() - started:.0f} s); "
            "API requests: the schemathesis test of the service"
        ),
        "detail": {"examples": examples, "pytest": tail},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=DRILLS, default=list(DRILLS))
    add_quick_flag(parser)
    args = parser.parse_args()
    if args.quick:
        args.only = list(QUICK_DRILLS)
    run = {
        "dropouts": dropouts,
        "kill": kill,
        "ledger-sqlite": lambda: ledger_crash(False),
        "ledger-postgres": lambda: ledger_crash(True),
        "load": load,
        "fuzz": fuzz,
    }
    started = machine()
    results: dict[str, Any] = {}
    for name in args.only:
        print(f"reliability: {name} ...", flush=True)
        try:
            results[name] = run[name]()
        except Exception as exc:  # a drill that breaks is a failed line, not a lost report
            results[name] = {
                "ok": False,
                "summary": f"{type(exc).__name__}: {exc}"[:500],
                "detail": None,
            }
        print(
            f"  {'ok' if results[name]['ok'] else 'FAILED'}: {results[name]['summary']}", flush=True
        )
    lines = ["| drill | result | what happened |", "|---|---|---|"]
    for name, result in results.items():
        lines.append(f"| {name} | {'ok' if result['ok'] else 'FAILED'} | {result['summary']} |")
    text = "\n".join(lines)
    paths = write_results("reliability", {"machine": started, "drills": results}, text)
    print(text)
    print(f"wrote {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
