"""How steady the release decision is from one draw of the data to the next: the demo's job
(23 companies x 500 rows, high tier, DP at epsilon = 3 with SecAgg+) over several seeds, and
the decision on each seed two ways, side by side from the same run:

- **point** (the gate before intervals): deny when the worst company's point gap to its own
  model, the calibration error or the robustness drop exceeds its tier's limit;
- **interval** (the gate now, Cedar's ``release_model``): deny only when some company's 95%
  gap interval lies wholly above the limit, hold the model for a regulator's review when the
  evidence cannot clear it (an interval across the limit, or a test split with fewer
  positives or negatives than the tier's minimum), allow otherwise.

    python -m benchmarks.release                 # 5 seeds
    python -m benchmarks.release --quick         # one seed of the demo's quick setting

Each seed runs ``sandbox demo --seed N --json`` in its own folder (the product's whole path).
A flip is a pair of seeds where one says allow and the other deny; the target is none for the
interval gate. Writes benchmarks/results/release.json and release.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from benchmarks.common import add_quick_flag, fmt, machine, write_results


def run_demo(seed: int, quick: bool, keep: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"sandbox-bench-release-{seed}-") as folder:
        out = Path(folder) / "demo.json"
        command = [sys.executable, "-m", "sandbox.cli", "demo", "--seed", str(seed)]
        command += ["--json", str(out), "--home", str(Path(folder) / "home")]
        if quick:
            command.append("--quick")
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"seed {seed}: demo failed: {done.stderr[-2000:]}")
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            (keep / f"demo-seed{seed}.json").write_text(out.read_text())
        report: dict[str, Any] = json.loads(out.read_text())
        return report


def point_decision(assessment: dict[str, Any], tier: str) -> str:
    """The gate before intervals, on the same figures: a point estimate over a limit denies."""
    from policies.tiers import shipped_tier_config

    limits = shipped_tier_config().tiers[tier]
    # Before calibration existed the gate judged the uncalibrated model's error.
    raw_ece = assessment.get("calibration_error_raw", assessment.get("calibration_error"))
    findings = (
        (assessment.get("worst_company_gap"), limits.release_max_worst_company_gap),
        (raw_ece, limits.release_max_calibration_error),
        (_worst(assessment.get("robustness_drop")), limits.release_max_robustness_drop),
    )
    exceeded = any(value is None or Decimal(str(value)) > limit for value, limit in findings)
    if limits.release_require_every_company and assessment.get("not_assessed"):
        exceeded = True
    return "deny" if exceeded else "allow"


def _worst(drops: dict[str, float | None] | None) -> float | None:
    values = [v for v in (drops or {}).values() if v is not None]
    return max(values) if values else None


def flips(decisions: list[str]) -> int:
    """Pairs of seeds on which one decision allows and the other denies."""
    return sum({a, b} == {"allow", "deny"} for a, b in itertools.combinations(decisions, 2))


def measure(seeds: list[int], quick: bool, keep: Path | None = None) -> dict[str, Any]:
    rows = []
    for seed in seeds:
        report = run_demo(seed, quick, keep)
        release = report["release"] or {}
        assessment = report["assessment"] or {}
        tier = release.get("tier", "high")
        calibration = assessment.get("calibration") or {}
        fairness = assessment.get("fairness") or {}
        rows.append(
            {
                "seed": seed,
                "tier": tier,
                "point": point_decision(assessment, tier),
                "interval": release.get("outcome"),
                "failed_checks": [c["name"] for c in release.get("checks", []) if not c["passed"]],
                "worst_company_gap": assessment.get("worst_company_gap"),
                "worst_company_gap_low": assessment.get("worst_company_gap_low"),
                "worst_company_gap_high": assessment.get("worst_company_gap_high"),
                "fewest_test_positives": assessment.get("fewest_test_positives"),
                "ece_uncalibrated": assessment.get("calibration_error_raw"),
                "ece_calibrated": assessment.get("calibration_error"),
                "ece_calibrated_interval": calibration.get("ece_after_interval"),
                "ece_before_held_out": calibration.get("ece_before"),
                "tpr_gap": fairness.get("tpr_gap"),
                "fpr_gap": fairness.get("fpr_gap"),
                "parity_difference": fairness.get("parity_difference"),
                "pooled_auc": assessment.get("pooled_auc"),
                "mean_federated_auc": report["summary"]["mean_auc"]["federated"],
            }
        )
    return {
        "seeds": rows,
        "flips": {
            "point": flips([r["point"] for r in rows]),
            "interval": flips([r["interval"] for r in rows]),
            "pairs": len(rows) * (len(rows) - 1) // 2,
        },
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        "| seed | tier | point gate | interval gate | worst gap [largest bounds] "
        "| fewest test + | ECE raw | ECE calibrated | TPR gap | FPR gap "
        "| failed checks (interval gate) |",
        "|---:|---|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["seeds"]:
        lines.append(
            f"| {r['seed']} | {r['tier']} | {r['point']} | {r['interval']} "
            f"| {fmt(r['worst_company_gap'])} [{fmt(r['worst_company_gap_low'])}, "
            f"{fmt(r['worst_company_gap_high'])}] | {r['fewest_test_positives']} "
            f"| {fmt(r['ece_uncalibrated'])} | {fmt(r['ece_calibrated'])} "
            f"| {fmt(r['tpr_gap'])} | {fmt(r['fpr_gap'])} "
            f"| {', '.join(r['failed_checks']) or '-'} |"
        )
    f = result["flips"]
    lines.append("")
    lines.append(
        f"Allow/deny flips between seeds (of {f['pairs']} pairs): point gate {f['point']}, "
        f"interval gate {f['interval']}."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="also keep each seed's demo JSON here")
    add_quick_flag(parser)
    args = parser.parse_args()
    seeds = [0] if args.quick else list(range(args.seeds))
    started = machine()
    result = measure(seeds, args.quick, args.keep)
    document = {
        "machine": started,
        "setting": "demo --quick" if args.quick else "demo (23 x 500 rows, high tier, DP eps 3)",
        **result,
    }
    json_path, md_path = write_results("release", document, table(result))
    print(table(result))
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
