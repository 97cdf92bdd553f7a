"""Flower's deployment engine on this machine: how long `federation up` takes, how long one
round (train + evaluate, a message exchange each) takes with N company nodes, and `down`.

    python -m benchmarks.deployment [--companies 3] [--rounds 5] [--database-url URL]

Real processes on loopback with TLS and node authentication, as `sandbox federation up`
starts them. Writes benchmarks/results/deployment.{json,md}. The load average is recorded
beside every figure: on a shared 2-core machine it moves them a lot.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from benchmarks.common import (
    add_quick_flag,
    isolated_home,
    loadavg,
    machine,
    onboard_census,
    write_results,
)


def node_work(receipts: list[Any], round_number: int) -> dict[str, float]:
    """Per task of one round, the longest any company worked on it: the wall time its node
    measured around the task's own work and signed in its receipt."""
    longest: dict[str, float] = {}
    for receipt in receipts:
        if receipt.round != round_number:
            continue
        metering = json.loads(receipt.payload).get("metering")
        if metering is None:
            continue
        seconds = float(metering["wall_seconds"])
        longest[receipt.task] = max(longest.get(receipt.task, 0.0), seconds)
    return longest


def measure(companies: int, rounds: int, database_url: str | None) -> dict[str, Any]:
    from policies.facts import EngineerFacts
    from sandbox.config import load_settings
    from sandbox.data import census
    from sandbox.db import get_engine
    from sandbox.governance import get_governance
    from sandbox.protocol.jobspec import JobSpec
    from sandbox.registry import jobs as job_store
    from sandbox.registry.companies import datasets_of
    from sandbox.runtime.federation import jobs, local, processes
    from sandbox.services.jobs import file_job

    with isolated_home("deployment"):
        if database_url:
            os.environ["SANDBOX_DATABASE_URL"] = database_url
        settings = load_settings()
        engine = get_engine(settings.database_url)
        ids = onboard_census(
            settings, engine, census.industries()[:companies], 300, 0, ("income-prediction",)
        )
        load_before = loadavg()
        started = time.monotonic()
        try:
            gov = get_governance(settings)
            state = local.up(settings, gov, ids, port=processes.free_port())
            up_s = time.monotonic() - started
            tier = gov.job_tier([d for c in ids for d in datasets_of(engine, c)])
            spec = JobSpec.model_validate(
                {
                    "purpose": "income-prediction",
                    "companies": ids,
                    "rounds": rounds,
                    "local_epochs": 1,
                    "min_participants": companies,
                    "round_timeout_s": 300,
                    # The privacy the companies' tier asks for (no DP: only the low tier).
                    "privacy": {}
                    if tier == "low"
                    else {
                        "secure_aggregation": tier == "high",
                        "dp": {"epsilon": float(gov.tiers.tiers[tier].dp_epsilon_cap)},
                    },
                }
            )
            engineer = EngineerFacts("benchmark")
            filed = file_job(gov, spec, engineer)
            if not filed.allowed:
                raise RuntimeError(f"the benchmark's job was not admitted: {filed.reasons}")
            job = filed.job
            cli = local.cli_for(settings, state.address)
            outcome = jobs.run_job(gov, engineer, cli, job.id, timeout=3600)
        finally:
            down_started = time.monotonic()
            report = local.down(settings)
            down_s = time.monotonic() - down_started
        records = job_store.rounds_of(engine, job.id)
        per_round = [(r.ended_at - r.started_at).total_seconds() for r in records if r.ended_at]
        receipts = job_store.receipts_of_job(engine, job.id)
        work = [node_work(receipts, r.number) for r in records if r.ended_at]
        work_s = [sum(w.values()) for w in work]
        rest_s = [r - w for r, w in zip(per_round, work_s, strict=True)]
        first = min(r.started_at for r in records)
        job_row = job_store.get_job(engine, job.id)
        setup = (first - job_row.started_at).total_seconds() if job_row.started_at else None
        return {
            "companies": companies,
            "rounds": rounds,
            "database": "postgresql" if database_url else "sqlite",
            "status": outcome.job_status,
            "flower_status": outcome.flower_status,
            "up_s": round(up_s, 1),
            "job_s": outcome.seconds,
            "setup_s": round(setup, 1) if setup is not None else None,
            "round_s": [round(s, 1) for s in per_round],
            "round_median_s": round(statistics.median(per_round), 1) if per_round else None,
            # A round's time, split: the nodes' own work on each task (the slowest company's,
            # from the signed receipts), and the rest (message hops and Flower's waits, app
            # process start, the coordinator's checks, policy decisions and ledger writes).
            "node_work_s": [{t: round(v, 2) for t, v in w.items()} for w in work],
            "node_work_median_s": round(statistics.median(work_s), 2) if work_s else None,
            "rest_median_s": round(statistics.median(rest_s), 2) if rest_s else None,
            "down_s": round(down_s, 1),
            "down_clean": report.clean,
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--companies", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database-url", default=None)
    add_quick_flag(parser)
    args = parser.parse_args()
    if args.quick:
        args.companies, args.rounds = 2, 1
    started = machine()
    result = measure(args.companies, args.rounds, args.database_url)
    document = {"machine": started, "result": result}
    table = "\n".join(
        [
            "# Deployment engine on loopback (TLS, node authentication)",
            "",
            f"{result['companies']} company nodes, {result['rounds']} rounds, "
            f"{result['database']}; load average {result['loadavg_before']} before, "
            f"{result['loadavg_after']} after.",
            "",
            "| step | seconds |",
            "|---|---|",
            f"| `federation up` (certificates, SuperLink, registration, nodes online) | {result['up_s']} |",
            f"| job start to round 1 (identify, feature statistics, local baselines) | {result['setup_s']} |",
            f"| one round: train + evaluate (median of {len(result['round_s'])}) | {result['round_median_s']} |",
            f"| each round | {', '.join(str(s) for s in result['round_s'])} |",
            f"| of a round: the nodes' own work (slowest company per task, median) | {result['node_work_median_s']} |",
            f"| of a round: the rest (hops, waits, process starts, coordinator) | {result['rest_median_s']} |",
            f"| whole `run` (submit to finished) | {result['job_s']} |",
            f"| `federation down` | {result['down_s']} (clean: {result['down_clean']}) |",
        ]
    )
    json_path, md_path = write_results("deployment", document, table)
    print(table)
    print(f"\nwritten: {json_path}, {md_path}")


if __name__ == "__main__":
    main()
