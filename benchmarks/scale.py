"""How cost grows with the number of companies: the same governed job with 23, 100 and 200
companies, cut from the census industries as firms, on Flower's simulation engine.

    python -m benchmarks.scale                      # 23, 100, 200 companies
    python -m benchmarks.scale --companies 23 100 --rounds 3

Each company holds the same number of rows (``--rows-per-company``), so the work per company
is fixed and only the count of companies changes. Per size: seconds per round (median of the
rounds), peak resident memory of the whole process tree (the coordinator and Ray's workers),
ledger entries per round. The growth exponent is the slope of log(cost) against
log(companies) between the smallest and the largest size: 1 is linear, 2 is quadratic.
Writes benchmarks/results/scale.json and scale.md.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from typing import Any

from benchmarks.common import PeakMemory, isolated_home, machine, write_results

PURPOSE = "income-prediction"


class RoundClock:
    """Progress hook: the wall time of each round, from one round's end to the next's."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.seconds: dict[int, float] = {}

    def stage(self, name: str) -> None:
        if name.startswith("round 1 of"):
            self.last = time.monotonic()

    def round_done(self, number: int, total: int, summary: dict[str, Any]) -> None:
        now = time.monotonic()
        self.seconds[number] = now - self.last
        self.last = now


def run_size(count: int, rows: int, rounds: int, seed: int) -> dict[str, Any]:
    from coordinator.simulation import run_on_simulation
    from sandbox.config import load_settings
    from sandbox.data import census
    from sandbox.governance import get_governance
    from sandbox.jobspec import JobSpec
    from sandbox.operations import approve_job, file_job, join

    with isolated_home(f"scale-{count}"):
        settings = load_settings()
        gov = get_governance(settings)
        started = time.monotonic()
        companies = []
        for company_id, industry, table in census.firms(count, rows=rows, seed=seed):
            join(gov, settings.company_dir(company_id), company_id, industry, table, (PURPOSE,))
            companies.append(company_id)
        joined_s = time.monotonic() - started
        datasets = [d for c in companies for d in [_dataset(gov, c)]]
        tier = gov.job_tier(datasets)
        cap = float(gov.tiers.tiers[tier].dp_epsilon_cap)
        spec = JobSpec.model_validate(
            {
                "purpose": PURPOSE,
                "companies": companies,
                "rounds": rounds,
                "local_epochs": 1,
                "min_participants": 3,
                "seed": seed,
                "privacy": {"secure_aggregation": tier == "high", "dp": {"epsilon": cap}},
            }
        )
        filed = file_job(gov, spec, engineer="engineer")
        if not filed.allowed:
            raise RuntimeError(f"{count} companies: not admitted: {filed.reasons}")
        if filed.job.status == "awaiting_approval":
            approve_job(gov, "regulator", filed.job.id, "scale benchmark")
        entries_before = gov.ledger.size
        clock = RoundClock()
        with PeakMemory() as memory:
            run_started = time.monotonic()
            outcome = run_on_simulation(settings, filed.job.id, progress=clock)
            run_s = time.monotonic() - run_started
        if outcome["status"] != "completed":
            raise RuntimeError(f"{count} companies: {outcome['status']}: {outcome['reason']}")
        per_round: dict[int, int] = dict.fromkeys(range(1, rounds + 1), 0)
        for entry in gov.ledger.iter_entries(start=entries_before):
            record = json.loads(entry.entry)
            if record.get("round") in per_round:
                per_round[record["round"]] += 1
        # Round 1 carries the start-up of the simulation engine; the median hides it.
        seconds = [clock.seconds[r] for r in sorted(clock.seconds)]
        return {
            "companies": count,
            "rows": sum(len(t.frame) for _, _, t in census.firms(count, rows=rows, seed=seed)),
            "tier": tier,
            "secure_aggregation": tier == "high",
            "join_seconds": round(joined_s, 1),
            "run_seconds": round(run_s, 1),
            "seconds_per_round": [round(s, 2) for s in seconds],
            "median_seconds_per_round": round(statistics.median(seconds[1:] or seconds), 2),
            "peak_memory_mib": round(memory.peak, 0),
            "ledger_entries_per_round": per_round,
            "median_ledger_entries_per_round": statistics.median(per_round.values()),
        }


def _dataset(gov: Any, company: str) -> Any:
    from sandbox.registry import service

    return service.get_dataset(gov.engine, company, "census")


def exponent(points: list[dict[str, Any]], key: str) -> float | None:
    """Slope of log(key) against log(companies) between the smallest and largest size."""
    first, last = points[0], points[-1]
    if first[key] <= 0 or last[key] <= 0 or first["companies"] == last["companies"]:
        return None
    return math.log(last[key] / first[key]) / math.log(last["companies"] / first["companies"])


def table(results: dict[str, Any]) -> str:
    points = results["sizes"]
    lines = [
        "| companies | rows | tier | s per round (median) | peak memory (MiB) | ledger entries per round | s per round per company |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in points:
        lines.append(
            f"| {p['companies']} | {p['rows']:,} | {p['tier']}{' + SecAgg+' if p['secure_aggregation'] else ''} "
            f"| {p['median_seconds_per_round']} | {p['peak_memory_mib']:.0f} "
            f"| {p['median_ledger_entries_per_round']:.0f} "
            f"| {p['median_seconds_per_round'] / p['companies']:.3f} |"
        )
    growth = results["growth_exponent"]
    lines.append("")
    lines.append(
        "Growth exponent (slope of log cost against log companies, smallest to largest size; "
        "1 = linear, 2 = quadratic): "
        + ", ".join(f"{k} {v:.2f}" if v is not None else f"{k} n/a" for k, v in growth.items())
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--companies", type=int, nargs="+", default=[23, 100, 200])
    parser.add_argument("--rows-per-company", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    points = []
    for count in sorted(args.companies):
        print(f"scale: {count} companies ...", flush=True)
        points.append(run_size(count, args.rows_per_company, args.rounds, args.seed))
        print(json.dumps(points[-1]), flush=True)
    results = {
        "machine": machine(),
        "settings": vars(args),
        "sizes": points,
        "growth_exponent": {
            "seconds_per_round": exponent(points, "median_seconds_per_round"),
            "peak_memory": exponent(points, "peak_memory_mib"),
            "ledger_entries_per_round": exponent(points, "median_ledger_entries_per_round"),
        },
    }
    text = table(results)
    paths = write_results("scale", results, text)
    print(text)
    print(f"wrote {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
