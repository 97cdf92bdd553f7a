"""What governance costs: the same job with and without the sandbox's governance (policy
decisions, the companies' gates, signed receipts, the ledger), side by side in one run,
alternating, several repetitions each.

    python -m benchmarks.overhead                 # 10 companies, 3 repetitions each
    python -m benchmarks.overhead --companies 23 --repetitions 3

Both arms run the same spec on the same companies (differential privacy on in both: it is
part of the job, not of governance) on Flower's simulation engine, each in a fresh home.
Reported: wall time of the whole job (simulation start included) and of the rounds alone,
medians per arm and their ratio. Writes benchmarks/results/overhead.json and overhead.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from benchmarks.common import (
    add_quick_flag,
    file_bare,
    isolated_home,
    machine,
    onboard_census,
    run_bare_or_governed,
    write_results,
)
from policies.facts import EngineerFacts

PURPOSE = "income-prediction"
# Low- and medium-tier industries: the comparison is about governance, not secure aggregation.
INDUSTRIES = [
    "Construction",
    "Education",
    "Transportation",
    "Retail trade",
    "Manufacturing-durable goods",
    "Manufacturing-nondurable goods",
    "Wholesale trade",
    "Mining",
    "Business and repair services",
    "Other professional services",
    "Agriculture",
    "Entertainment",
]


class Clock:
    def __init__(self) -> None:
        self.first_round_start: float | None = None
        self.end = 0.0

    def stage(self, name: str) -> None:
        if name.startswith("round 1 of") and self.first_round_start is None:
            self.first_round_start = time.monotonic()

    def round_done(self, number: int, total: int, summary: dict[str, Any]) -> None:
        self.end = time.monotonic()


def run_arm(governed: bool, companies: int, rows: int, rounds: int, seed: int) -> dict[str, float]:

    from sandbox.config import load_settings
    from sandbox.governance import get_governance
    from sandbox.protocol.jobspec import JobSpec
    from sandbox.services.jobs import file_job

    with isolated_home(f"overhead-{'gov' if governed else 'bare'}"):
        settings = load_settings()
        gov = get_governance(settings) if governed else None
        ids = onboard_census(
            settings, _engine(settings), INDUSTRIES[:companies], rows, seed, (PURPOSE,)
        )
        spec = JobSpec.model_validate(
            {
                "purpose": PURPOSE,
                "companies": ids,
                "rounds": rounds,
                "local_epochs": 1,
                "seed": seed,
                "min_participants": 3,
                "privacy": {"dp": {"epsilon": 2.0}},
            }
        )
        if gov is not None:
            filed = file_job(gov, spec, EngineerFacts("engineer"))
            assert filed.allowed, filed.reasons
            job_id = filed.job.id
        else:
            job_id = file_bare(_engine(settings), spec)
        clock = Clock()
        started = time.monotonic()
        outcome = run_bare_or_governed(settings, job_id, governed, clock)
        total = time.monotonic() - started
        if outcome["status"] != "completed":
            raise RuntimeError(f"{'governed' if governed else 'bare'}: {outcome}")
        rounds_s = clock.end - (clock.first_round_start or started)
        ledger = gov.ledger.size if gov is not None else 0
        return {"job_s": total, "rounds_s": rounds_s, "ledger_entries": ledger}


def _engine(settings: Any) -> Any:
    from sandbox.db import get_engine

    return get_engine(settings.database_url)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--companies", type=int, default=10)
    parser.add_argument("--rows-per-company", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    add_quick_flag(parser)
    args = parser.parse_args()
    if args.quick:
        args.companies, args.rows_per_company, args.rounds, args.repetitions = 3, 100, 2, 1
    started = machine()
    runs: list[dict[str, Any]] = []
    for repetition in range(args.repetitions):
        # Alternate which arm goes first, so that drift in the machine's load hits both.
        order = (True, False) if repetition % 2 == 0 else (False, True)
        for governed in order:
            print(
                f"overhead: repetition {repetition + 1}, {'governed' if governed else 'bare'}",
                flush=True,
            )
            figures = run_arm(
                governed, args.companies, args.rows_per_company, args.rounds, args.seed
            )
            runs.append({"repetition": repetition + 1, "governed": governed, **figures})
    summary: dict[str, Any] = {}
    for key in ("job_s", "rounds_s"):
        gov = statistics.median(r[key] for r in runs if r["governed"])
        bare = statistics.median(r[key] for r in runs if not r["governed"])
        summary[key] = {"governed": gov, "bare": bare, "ratio": gov / bare}
    results = {"machine": started, "settings": vars(args), "runs": runs, "summary": summary}
    lines = [
        f"{args.companies} companies x {args.rows_per_company} rows, {args.rounds} rounds, DP on in "
        f"both arms; medians of {args.repetitions} alternating repetitions.",
        "",
        "| measure | with governance (s) | without (s) | ratio |",
        "|---|---|---|---|",
    ]
    for key, label in (("job_s", "whole job"), ("rounds_s", "rounds only")):
        s = summary[key]
        lines.append(f"| {label} | {s['governed']:.1f} | {s['bare']:.1f} | {s['ratio']:.3f} |")
    lines.append("")
    lines.append("| repetition | arm | whole job (s) | rounds (s) | ledger entries |")
    lines.append("|---|---|---|---|---|")
    for r in runs:
        lines.append(
            f"| {r['repetition']} | {'governed' if r['governed'] else 'bare'} | {r['job_s']:.1f} "
            f"| {r['rounds_s']:.1f} | {r['ledger_entries']} |"
        )
    text = "\n".join(lines)
    paths = write_results("overhead", results, text)
    print(text)
    print(f"wrote {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
