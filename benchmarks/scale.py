"""How cost grows with the number of companies: the same governed job with 23, 100 and 200
companies, cut from the census industries as firms, on Flower's simulation engine.

    python -m benchmarks.scale                      # 23, 100, 200 companies
    python -m benchmarks.scale --companies 23 100 --rounds 3

Each company holds the same number of rows (``--rows-per-company``), so the work per company
is fixed and only the count of companies changes. Per size: seconds per round (median of the
rounds), peak resident memory of the whole process tree (the coordinator and Ray's workers),
ledger entries per round. The growth exponent is the slope of log(cost) against
log(companies) between the smallest and the largest size: 1 is linear, 2 is quadratic.
Two arms per size, side by side: ``governed`` (the product) and ``bare`` (the same spec,
DP-SGD and SecAgg+ alike, without policy decisions, gates, receipts or ledger), so that the
report separates what governance costs from what the learning and Flower's engine cost.
Writes benchmarks/results/scale.json and scale.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time
from typing import Any

from benchmarks.common import (
    PeakMemory,
    add_quick_flag,
    file_bare,
    isolated_home,
    machine,
    run_bare_or_governed,
    write_results,
)
from policies.facts import EngineerFacts

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


def run_size(
    count: int, rows: int, rounds: int, seed: int, governed: bool = True
) -> dict[str, Any]:
    """One size, one arm. The governed arm runs the job as the product does (admission,
    approval, Cedar selection each round, the companies' gates, signed receipts, the
    ledger). The bare arm runs the same spec (DP-SGD and SecAgg+ alike) with none of that,
    so that the difference between the arms is what governance costs at each size."""
    from sandbox.config import load_settings
    from sandbox.data import census
    from sandbox.db import get_engine
    from sandbox.governance import get_governance
    from sandbox.protocol.jobspec import JobSpec
    from sandbox.services.companies import join
    from sandbox.services.jobs import approve_as_installation_regulator, file_job

    with isolated_home(f"scale-{count}-{'gov' if governed else 'bare'}"):
        settings = load_settings()
        gov = get_governance(settings)
        engine = get_engine(settings.database_url)
        started = time.monotonic()
        companies = []
        total_rows = 0
        for company_id, industry, table in census.firms(count, rows=rows, seed=seed):
            # Both arms join through the product's services: the arms differ in the rounds.
            join(gov, settings.company_dir(company_id), company_id, industry, table, (PURPOSE,))
            companies.append(company_id)
            total_rows += len(table.frame)
        joined_s = time.monotonic() - started
        datasets = [_dataset(engine, c) for c in companies]
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
        if governed:
            filed = file_job(gov, spec, EngineerFacts("engineer"))
            if not filed.allowed:
                raise RuntimeError(f"{count} companies: not admitted: {filed.reasons}")
            job_id = filed.job.id
            if filed.job.status == "awaiting_approval":
                approve_as_installation_regulator(gov, job_id, "scale benchmark")
        else:
            job_id = file_bare(engine, spec)
        entries_before = gov.ledger.size
        clock = RoundClock()
        with PeakMemory() as memory:
            run_started = time.monotonic()
            outcome = run_bare_or_governed(settings, job_id, governed, clock)
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
            "arm": "governed" if governed else "bare",
            "rows": total_rows,
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


def _dataset(engine: Any, company: str) -> Any:
    from sandbox.registry import companies as company_store

    return company_store.get_dataset(engine, company, "census")


def exponent(points: list[dict[str, Any]], key: str) -> float | None:
    """Slope of log(key) against log(companies) between the smallest and largest size."""
    return _slope(points[0], points[-1], key)


def _slope(first: dict[str, Any], last: dict[str, Any], key: str) -> float | None:
    if first[key] <= 0 or last[key] <= 0 or first["companies"] == last["companies"]:
        return None
    return math.log(last[key] / first[key]) / math.log(last["companies"] / first["companies"])


def governance_cost(governed: list[dict[str, Any]], bare: list[dict[str, Any]]) -> list[dict]:
    """Seconds per round that governance adds at each size both arms ran."""
    by_size = {p["companies"]: p for p in bare}
    return [
        {
            "companies": g["companies"],
            "seconds": round(
                g["median_seconds_per_round"] - by_size[g["companies"]]["median_seconds_per_round"],
                2,
            ),
        }
        for g in governed
        if g["companies"] in by_size
    ]


def table(results: dict[str, Any]) -> str:
    lines = [
        "| arm | companies | rows | tier | s per round (median) | peak memory (MiB) | ledger entries per round | s per round per company |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in results["sizes"]:
        lines.append(
            f"| {p.get('arm', 'governed')} | {p['companies']} | {p['rows']:,} "
            f"| {p['tier']}{' + SecAgg+' if p['secure_aggregation'] else ''} "
            f"| {p['median_seconds_per_round']} | {p['peak_memory_mib']:.0f} "
            f"| {p['median_ledger_entries_per_round']:.0f} "
            f"| {p['median_seconds_per_round'] / p['companies']:.3f} |"
        )
    lines.append("")
    lines.append(
        "Growth exponents (slope of log cost against log companies; 1 = linear, 2 = quadratic), "
        "smallest to largest size and between neighbouring sizes:"
    )
    lines.append("")
    for arm, growth in results["growth_exponent"].items():
        lines.append(
            f"- {arm}: "
            + ", ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in growth.items()
            )
        )
    if results.get("governance_seconds_per_round"):
        lines.append("")
        lines.append(
            "Governance (governed minus bare, seconds per round): "
            + ", ".join(
                f"{g['companies']} companies {g['seconds']:+.2f}"
                for g in results["governance_seconds_per_round"]
            )
        )
    return "\n".join(lines)


def growth(points: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "seconds_per_round": exponent(points, "median_seconds_per_round"),
        "peak_memory": exponent(points, "peak_memory_mib"),
        "ledger_entries_per_round": exponent(points, "median_ledger_entries_per_round"),
    }
    steps = [
        f"{a['companies']}->{b['companies']} {_slope(a, b, 'median_seconds_per_round'):.2f}"
        for a, b in itertools.pairwise(points)
    ]
    out["seconds_per_round_by_step"] = "; ".join(steps)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--companies", type=int, nargs="+", default=[23, 100, 200])
    parser.add_argument("--rows-per-company", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--arms", nargs="+", choices=("governed", "bare"), default=["governed", "bare"]
    )
    add_quick_flag(parser)
    args = parser.parse_args()
    if args.quick:
        args.companies, args.rows_per_company, args.rounds = [23], 40, 2  # 23: one per industry
    started = machine()
    arms: dict[str, list[dict[str, Any]]] = {arm: [] for arm in args.arms}
    for count in sorted(args.companies):
        # Both arms of one size side by side, so that machine load hits them alike.
        for arm in args.arms:
            print(f"scale: {count} companies, {arm} ...", flush=True)
            point = run_size(
                count, args.rows_per_company, args.rounds, args.seed, arm == "governed"
            )
            arms[arm].append(point)
            print(json.dumps(point), flush=True)
    results: dict[str, Any] = {
        "machine": started,
        "settings": vars(args),
        "sizes": [p for arm in args.arms for p in arms[arm]],
        "growth_exponent": {arm: growth(points) for arm, points in arms.items()},
    }
    if "governed" in arms and "bare" in arms:
        results["governance_seconds_per_round"] = governance_cost(arms["governed"], arms["bare"])
    text = table(results)
    paths = write_results("scale", results, text)
    print(text)
    print(f"wrote {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
