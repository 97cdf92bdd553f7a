"""What record-level differential privacy costs the federated model, and what SecAgg+ costs
a round, on the census companies.

    python -m benchmarks.privacy                         # 23 companies x 500 rows, 3 seeds
    python -m benchmarks.privacy --quick                  # one quick point

For each seed the companies join (their vaults hold a seeded 500-row sample), then these jobs
are filed and run one after another in one simulation (the engine starts once):

- the non-private reference: the job spec's defaults (40 rounds x 5 local epochs, SGD with
  momentum, learning rate 0.05, batch 64);
- the same job without DP but with the DP defaults' training settings (fewer, larger steps),
  to separate what the noise costs from what the shorter training costs;
- one DP job per epsilon (each company's total for the whole job), with the spec's DP
  defaults; each epsilon has its own purpose, so the budgets do not add up across them.

On the first seed, a job with the DP defaults' training settings runs once plainly and once
through SecAgg+, for the cost per round. Writes benchmarks/results/privacy.json, privacy.md
and privacy.svg. Every run goes through the product: vaults, filed jobs, Flower's simulation
engine, the coordinator's checks and the privacy ledger.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    add_quick_flag,
    file_bare,
    fmt,
    isolated_home,
    machine,
    median,
    onboard_census,
    write_results,
)

PURPOSE = "income-prediction"
# Up to the medium tier's cap (5, policies/tiers.toml): the census rows are personal data, and
# a company's node refuses a run that would take it past its tier's cap.
DEFAULT_EPSILONS = (1.0, 2.0, 3.0, 5.0)


def purpose_for(epsilon: float | None) -> str:
    return PURPOSE if epsilon is None else f"{PURPOSE}-dp{epsilon:g}".replace(".", "_")


def job_spec(companies: list[str], seed: int, kind: str, epsilon: float | None = None) -> Any:
    """The job of one benchmark row; DP jobs leave the training settings to the DP defaults."""
    from sandbox.protocol.jobspec import DP_TRAINING_DEFAULTS, JobSpec

    raw: dict[str, Any] = {
        "purpose": purpose_for(epsilon),
        "companies": companies,
        "seed": seed,
        "min_participants": 3,
    }
    if kind == "dp":
        raw["privacy"] = {"dp": {"epsilon": epsilon}}
    elif kind in ("same-settings", "secagg-plain", "secagg"):
        raw.update(DP_TRAINING_DEFAULTS)
        if kind == "secagg":
            raw["privacy"] = {"secure_aggregation": True}
    spec = JobSpec.model_validate(raw)
    # Evaluate once, after the last round: rounds then time training (and SecAgg+) only.
    return spec.model_copy(update={"evaluate_every": spec.rounds})


def round_seconds(engine: Any, job_id: str) -> list[float]:
    from sandbox.registry import jobs as job_store

    return [
        (r.ended_at - r.started_at).total_seconds()
        for r in job_store.rounds_of(engine, job_id)
        if r.status == "completed" and r.ended_at is not None
    ]


def describe(engine: Any, job_id: str, label: str, epsilon: float | None) -> dict[str, Any]:
    from sandbox.registry import jobs as job_store
    from sandbox.registry import privacy as ledger

    job = job_store.get_job(engine, job_id)
    if job.status != "completed":
        raise RuntimeError(f"{label}: job {job.status}: {job.status_reason}")
    result = job.result or {}
    spends = ledger.job_spends(engine, job_id)
    per_company: dict[str, float] = {}
    for row in spends:
        per_company[row.company_id] = max(per_company.get(row.company_id, 0.0), row.epsilon_job)
    seconds = round_seconds(engine, job_id)
    return {
        "job": job_id,
        "label": label,
        "epsilon": epsilon,
        "mean_auc": result["mean_auc"]["federated"],
        "companies_auc": {
            c: (v.get("federated") or {}).get("auc") for c, v in result["companies"].items()
        },
        "rounds": result["rounds"],
        "epsilon_spent_max": max(per_company.values()) if per_company else None,
        "epsilon_spent_min": min(per_company.values()) if per_company else None,
        "delta_max": max((r.delta for r in spends), default=None),
        "unsettled_charges": sum(1 for r in spends if r.status != "reported"),
        "round_seconds": [round(s, 3) for s in seconds],
    }


def run_seed(
    seed: int, rows: int, epsilons: list[float], industries: int | None, secagg: bool
) -> dict[str, Any]:

    from sandbox.config import load_settings
    from sandbox.data import census
    from sandbox.db import get_engine
    from sandbox.runtime.bare import run_bare

    with isolated_home(f"privacy-{seed}"):
        settings = load_settings()
        engine = get_engine(settings.database_url)
        purposes = tuple(purpose_for(e) for e in [None, *epsilons])
        companies = onboard_census(
            settings, engine, census.industries()[:industries], rows, seed, purposes
        )
        plan: list[tuple[str, str, float | None]] = [
            ("non-private reference", "reference", None),
            ("non-private, DP training settings", "same-settings", None),
            *[(f"DP epsilon {e:g}", "dp", e) for e in epsilons],
        ]
        if secagg:
            plan += [("plain (SecAgg+ comparison)", "secagg-plain", None)]
            plan += [("SecAgg+", "secagg", None)]
        jobs = []
        for label, kind, epsilon in plan:
            spec = job_spec(companies, seed, kind, epsilon)
            jobs.append((file_bare(engine, spec), label, kind, epsilon))
        started = time.monotonic()
        # The learning and privacy mechanisms alone (the bare arm): the non-private reference
        # jobs are ones the policy would not admit over personal data.
        run_bare(settings, [j for j, *_ in jobs], progress=Printer(seed))
        seconds = time.monotonic() - started
        runs = [describe(engine, j, label, e) | {"kind": kind} for j, label, kind, e in jobs]
        out: dict[str, Any] = {"seed": seed, "seconds": round(seconds, 1), "runs": runs}
        if secagg:
            out["secure_aggregation"] = secure_comparison(settings, engine, jobs)
    return out


def secure_comparison(settings: Any, engine: Any, jobs: list[tuple]) -> dict[str, Any]:  # type: ignore[type-arg]
    from coordinator.runner import load_weights
    from sandbox.registry import jobs as job_store

    ids = {kind: job_id for job_id, _, kind, _ in jobs}
    plain, secure = ids["secagg-plain"], ids["secagg"]
    # The first round carries one-off costs (actors warming up); the last one evaluates.
    plain_s = round_seconds(engine, plain)[1:-1]
    secure_s = round_seconds(engine, secure)[1:-1]
    stages = [
        r.metrics["secure_aggregation"]["seconds"]
        for r in job_store.rounds_of(engine, secure)
        if r.status == "completed"
    ][1:-1]
    a = load_weights(settings.runs_dir / plain / "model.npz")
    b = load_weights(settings.runs_dir / secure / "model.npz")
    return {
        "companies": len(job_store.job_spec(job_store.get_job(engine, plain)).companies),
        "rounds_timed": len(plain_s),
        "plain_round_s_median": median(plain_s),
        "secagg_round_s_median": median(secure_s),
        "secagg_protocol_s_median": median(stages),
        "overhead_s_median": median(secure_s) - median(plain_s),
        "secure_rounds_completed": sum(
            1
            for r in job_store.rounds_of(engine, secure)
            if r.metrics.get("secure_aggregation", {}).get("completed")
        ),
        "max_abs_weight_difference": max(float(abs(a[k] - b[k]).max()) for k in a),
    }


class Printer:
    """Progress on stderr: a line per stage and per round."""

    def __init__(self, seed: int):
        self.seed = seed

    def stage(self, name: str) -> None:
        print(f"[seed {self.seed}] {name}", file=sys.stderr, flush=True)

    def round_done(self, number: int, total: int, summary: dict[str, Any]) -> None:
        if number == total or number % 10 == 0:
            print(f"[seed {self.seed}]   round {number}/{total}", file=sys.stderr, flush=True)


def summarise(seeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        for run in seed["runs"]:
            if run["kind"].startswith("secagg"):
                continue
            row = rows.setdefault(
                run["label"],
                {
                    "label": run["label"],
                    "epsilon": run["epsilon"],
                    "auc": {},
                    "spent": [],
                    "round_s": [],
                },
            )
            row["auc"][seed["seed"]] = run["mean_auc"]
            # The first round warms the actors up and the last one evaluates: time the rest.
            row["round_s"].append(median(run["round_seconds"][1:-1]))
            if run["epsilon_spent_max"] is not None:
                row["spent"].append(run["epsilon_spent_max"])
                row["delta_max"] = max(row.get("delta_max", 0.0), run["delta_max"])
    reference = rows.get("non-private reference")
    out = []
    for row in rows.values():
        values = list(row["auc"].values())
        row["mean"] = statistics.fmean(values)
        row["sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        if reference is not None:
            paired = [row["auc"][s] - reference["auc"][s] for s in row["auc"]]
            row["minus_reference"] = statistics.fmean(paired)
        row["epsilon_spent_max"] = max(row.pop("spent"), default=None)
        row["round_s_median"] = median(row.pop("round_s"))
        out.append(row)
    return out


def table(summary: list[dict[str, Any]], seeds: list[dict[str, Any]], rows: int) -> str:
    seed_ids = [s["seed"] for s in seeds]
    lines = [
        f"Federated mean ROC AUC over the companies' own test splits ({rows} rows per company, "
        f"{len(seeds[0]['runs'][0]['companies_auc'])} companies), by seed; "
        "epsilon is each company's total for the whole job, delta each company's own "
        "(1/(10 x its training rows); the largest belongs to the company with the fewest rows). "
        "Round (s): median wall time of a round, evaluation rounds excluded.",
        "",
        "| setting | epsilon spent (max) | delta (max) | "
        + " | ".join(f"seed {s}" for s in seed_ids)
        + " | mean | sd | minus reference | round (s) |",
        "|---|---|---|" + "---|" * len(seed_ids) + "---|---|---|---|",
    ]
    for row in summary:
        delta = row.get("delta_max")
        delta_text = "n/a" if delta is None else f"{delta:.1e}"
        gap = row.get("minus_reference")
        gap_text = "n/a" if gap is None else f"{gap:+.4f}"
        lines.append(
            f"| {row['label']} | {fmt(row['epsilon_spent_max'], 3)} | {delta_text} | "
            + " | ".join(fmt(row["auc"].get(s)) for s in seed_ids)
            + f" | {fmt(row['mean'])} | {fmt(row['sd'])} | {gap_text} | "
            f"{row['round_s_median']:.2f} |"
        )
    secure = next((s["secure_aggregation"] for s in seeds if "secure_aggregation" in s), None)
    if secure:
        lines += [
            "",
            f"SecAgg+ cost per round: the same job (DP training settings, no DP) plainly and "
            f"through SecAgg+, {secure['companies']} companies, median of "
            f"{secure['rounds_timed']} rounds, simulation engine on this machine:",
            "",
            "| plain round (s) | SecAgg+ round (s) | overhead (s) | slowdown | "
            "max abs difference of the final models |",
            "|---|---|---|---|---|",
            f"| {secure['plain_round_s_median']:.2f} | {secure['secagg_round_s_median']:.2f} | "
            f"{secure['overhead_s_median']:+.2f} | "
            f"{secure['secagg_round_s_median'] / secure['plain_round_s_median']:.1f}x | "
            f"{secure['max_abs_weight_difference']:.1e} |",
        ]
    return "\n".join(lines)


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    """Left: mean AUC per seed against epsilon, with the non-private runs as lines. Right: the
    paired loss against the non-private reference (mean and range over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dp = sorted((r for r in summary if r["epsilon"] is not None), key=lambda r: r["epsilon"])
    epsilons = [r["epsilon"] for r in dp]
    by_label = {r["label"]: r for r in summary}
    reference = by_label["non-private reference"]
    same = by_label.get("non-private, DP training settings")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for seed in sorted(reference["auc"]):
        line = left.plot(epsilons, [r["auc"][seed] for r in dp], marker="o", label=f"seed {seed}")
        colour = line[0].get_color()
        left.axhline(reference["auc"][seed], linestyle="--", color=colour, alpha=0.6)
    left.set_title("mean AUC (dashed: non-private reference)", fontsize=9)
    left.set_ylabel("federated mean ROC AUC")
    gaps = [[r["auc"][s] - reference["auc"][s] for s in r["auc"]] for r in dp]
    means = [statistics.fmean(g) for g in gaps]
    right.errorbar(
        epsilons,
        means,
        yerr=[[m - min(g) for m, g in zip(means, gaps, strict=True)],
              [max(g) - m for m, g in zip(means, gaps, strict=True)]],
        marker="o",
        capsize=3,
        label="DP-SGD (mean, range over seeds)",
    )  # fmt: skip
    if same is not None:
        right.axhline(same["minus_reference"], linestyle=":", color="grey",
                      label="non-private, DP training settings")  # fmt: skip
    right.axhline(-0.02, linestyle="--", color="red", alpha=0.6, label="-0.02 target at epsilon 8")
    right.set_title("AUC minus the non-private reference, paired by seed", fontsize=9)
    right.legend(loc="lower right", fontsize=8)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(epsilons, [f"{e:g}" for e in epsilons])
        ax.set_xlabel("epsilon per company for the whole job")
        ax.grid(alpha=0.3)
    left.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epsilons", type=float, nargs="+", default=list(DEFAULT_EPSILONS))
    parser.add_argument("--rows-per-company", type=int, default=500)
    parser.add_argument("--industries", type=int, default=None, help="first N industries only")
    parser.add_argument("--no-secagg", action="store_true", help="skip the SecAgg+ comparison")
    parser.add_argument(
        "--from-json", action="store_true", help="only redraw the table and plot from privacy.json"
    )
    add_quick_flag(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epsilons, args.rows_per_company, args.industries = [0], [3.0], 100, 3
        args.no_secagg = True

    if args.from_json:
        document = json.loads((RESULTS / "privacy.json").read_text())
        seeds = document["seeds"]
        document["summary"] = summarise(seeds)
        text = table(document["summary"], seeds, document["settings"]["rows_per_company"])
        write_results("privacy", document, text)
        plot(document["summary"], RESULTS / "privacy.svg")
        print(text)
        return 0
    started = machine()
    seeds = []
    for index, seed in enumerate(args.seeds):
        seeds.append(
            run_seed(
                seed,
                args.rows_per_company,
                args.epsilons,
                args.industries,
                secagg=index == 0 and not args.no_secagg,
            )
        )
    summary = summarise(seeds)
    document = {
        "machine": started,
        "settings": {
            "rows_per_company": args.rows_per_company,
            "seeds": args.seeds,
            "epsilons": args.epsilons,
            "engine": "flower-simulation",
        },
        "summary": summary,
        "seeds": seeds,
    }
    text = table(summary, seeds, args.rows_per_company)
    json_path, md_path = write_results("privacy", document, text)
    plot(summary, RESULTS / "privacy.svg")
    print(text)
    print(f"\nwrote {json_path}, {md_path} and {RESULTS / 'privacy.svg'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
