"""Does pooling knowledge without pooling data pay off? Federated against local-only and
the pooled upper bound, on the census companies, over several seeds.

    python -m benchmarks.utility                # 3 seeds, natural split and 500 rows/company
    python -m benchmarks.utility --seeds 0 --settings rows500

Writes benchmarks/results/utility.json and utility.md. Each run goes through the product:
companies join (vaults), a job is filed and run on Flower's simulation engine; the pooled
model is trained here only, as the labelled upper bound.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from benchmarks.common import (
    add_quick_flag,
    file_bare,
    fmt,
    isolated_home,
    machine,
    run_bare_or_governed,
    write_results,
)
from sandbox.learning.metrics import mean_defined

SETTINGS = {
    # A small firm per industry: 500 sampled rows each (fewer where the industry is smaller).
    "rows500": {"rows_per_company": 500, "rounds": 40, "local_epochs": 5},
    # Every worker of each industry: 148,318 rows; more rows per pass, so fewer passes.
    "natural": {"rows_per_company": None, "rounds": 20, "local_epochs": 1},
}
# The smoke run's setting (``--quick``), never part of the measured table.
QUICK = {"rows_per_company": 60, "rounds": 2, "local_epochs": 1}


def run_once(setting: str, seed: int) -> dict[str, Any]:
    from sandbox.config import load_settings
    from sandbox.db import get_engine
    from sandbox.runtime import demo

    config = SETTINGS[setting]
    options = demo.DemoOptions(
        rows_per_company=config["rows_per_company"],
        rounds=config["rounds"],
        local_epochs=config["local_epochs"],
        seed=seed,
    )
    with isolated_home(f"utility-{setting}-{seed}"):
        settings = load_settings()
        companies = demo.join_census_companies(settings, options)
        # The learning engine alone: no DP, no governance (see privacy.py): the bare arm.
        job_id = file_bare(
            get_engine(settings.database_url),
            demo.demo_spec(companies, options),
            filed_by=demo.DEMO_ENGINEER,
        )
        started = time.monotonic()
        outcome = run_bare_or_governed(settings, job_id, governed=False, progress=None)
        seconds = time.monotonic() - started
        if outcome["status"] != "completed":
            raise RuntimeError(
                f"{setting} seed {seed}: job {outcome['status']}: {outcome['reason']}"
            )
        report = demo.build_report(settings, job_id, options)
    report["seconds_federated"] = round(seconds, 1)
    return report


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per company, the mean over seeds of each model's AUC; then the summary."""
    companies = [row["company"] for row in runs[0]["companies"]]
    per_company = []
    for company in companies:
        rows = [next(r for r in run["companies"] if r["company"] == company) for run in runs]
        entry: dict[str, Any] = {"company": company, "rows": rows[0]["rows"]}
        for kind in ("local", "federated", "pooled"):
            entry[kind] = mean_defined([r[kind]["auc"] for r in rows])
        per_company.append(entry)
    comparable = [c for c in per_company if c["local"] is not None and c["federated"] is not None]
    means = {k: mean_defined([c[k] for c in per_company]) for k in ("local", "federated", "pooled")}
    return {
        "companies": per_company,
        "mean_auc": means,
        "federated_minus_pooled": means["federated"] - means["pooled"],
        "federated_beats_local": sum(1 for c in comparable if c["federated"] > c["local"]),
        "comparable_companies": len(comparable),
        "per_seed": [
            {
                "seed": run["settings"]["seed"],
                "mean_auc": run["summary"]["mean_auc"],
                "federated_beats_local": run["summary"]["federated_beats_local"],
                "comparable_companies": run["summary"]["comparable_companies"],
                "seconds_federated": run["seconds_federated"],
            }
            for run in runs
        ],
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        "| setting | companies | rows | mean AUC local-only | federated | pooled (upper bound) | federated - pooled | federated > local-only |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for setting, summary in results["settings"].items():
        rows = sum(c["rows"] for c in summary["companies"])
        m = summary["mean_auc"]
        lines.append(
            f"| {setting} | {len(summary['companies'])} | {rows:,} | {fmt(m['local'])} | {fmt(m['federated'])} "
            f"| {fmt(m['pooled'])} | {summary['federated_minus_pooled']:+.4f} "
            f"| {summary['federated_beats_local']} of {summary['comparable_companies']} |"
        )
    lines.append("")
    lines.append(
        f"Mean over seeds {results['seeds']} of each company's ROC AUC on its own held-out test split; "
        "per seed:"
    )
    lines.append("")
    lines.append(
        "| setting | seed | local-only | federated | pooled | federated > local-only | federated run (s) |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for setting, summary in results["settings"].items():
        for seed in summary["per_seed"]:
            m = seed["mean_auc"]
            lines.append(
                f"| {setting} | {seed['seed']} | {fmt(m['local'])} | {fmt(m['federated'])} | {fmt(m['pooled'])} "
                f"| {seed['federated_beats_local']} of {seed['comparable_companies']} | {seed['seconds_federated']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    add_quick_flag(parser)
    args = parser.parse_args()
    if args.quick:
        SETTINGS["quick"] = QUICK
        args.seeds, args.settings = [0], ["quick"]
    os.environ.setdefault("SANDBOX_LOG_LEVEL", "WARNING")
    results: dict[str, Any] = {
        "machine": machine(),
        "seeds": args.seeds,
        "settings": {},
        "runs": {},
    }
    for setting in args.settings:
        runs = []
        for seed in args.seeds:
            print(f"utility: {setting} seed {seed} ...", flush=True)
            runs.append(run_once(setting, seed))
        results["runs"][setting] = runs
        results["settings"][setting] = aggregate(runs)
        results["settings"][setting]["config"] = SETTINGS[setting]
    text = table(results)
    paths = write_results("utility", results, text)
    print(text)
    print(f"wrote {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
