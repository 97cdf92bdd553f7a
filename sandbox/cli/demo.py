"""``sandbox demo``: the end-to-end demo on real census data, and how its results print."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from sandbox.cli.render import RoundProgress, console, fail, fmt, progress_bar
from sandbox.cli.settlement import print_statement
from sandbox.config import load_settings
from sandbox.errors import SandboxError
from sandbox.governance import get_governance
from sandbox.runtime import demo as demo_mod


def demo(
    quick: bool = typer.Option(
        False, "--quick", help="A small version (6 companies, 3 rounds) for tests."
    ),
    rows_per_company: int = typer.Option(
        500,
        "--rows-per-company",
        min=20,
        help="Sample this many rows of each industry (a smaller firm).",
    ),
    all_rows: bool = typer.Option(
        False, "--all-rows", help="Give each company its whole industry."
    ),
    companies: int | None = typer.Option(
        None, "--companies", min=2, max=23, help="Use the first N industries."
    ),
    rounds: int | None = typer.Option(None, "--rounds", min=1, max=500),
    local_epochs: int | None = typer.Option(None, "--local-epochs", min=1, max=50),
    model: str = typer.Option("logreg", "--model", help="logreg or mlp"),
    strategy: str = typer.Option(
        "fedavg", "--strategy", help="fedavg, fedprox, fedtrimmedavg, fedmedian, krum"
    ),
    seed: int = typer.Option(0, "--seed", min=0),
    json_path: Path | None = typer.Option(
        None, "--json", help="Also write the results as JSON here."
    ),
    home: Path | None = typer.Option(
        None, "--home", help="Demo folder (default: <SANDBOX_HOME>/demo); reset at start."
    ),
) -> None:
    """Run the end-to-end demo on real census data, one company per industry."""
    base = demo_mod.DemoOptions.quick() if quick else demo_mod.DemoOptions()
    options = demo_mod.DemoOptions(
        rows_per_company=None
        if all_rows
        else (base.rows_per_company if quick else rows_per_company),
        industries=companies or base.industries,
        rounds=rounds or base.rounds,
        local_epochs=local_epochs or base.local_epochs,
        seed=seed,
        model=model,
        strategy=strategy,
    )
    demo_home = (home or load_settings().home / "demo").resolve()
    os.environ["SANDBOX_HOME"] = str(demo_home)
    settings = load_settings()
    demo_mod.reset_home(settings)
    size = (
        "whole industries"
        if options.rows_per_company is None
        else (f"small firms: a seeded sample of {options.rows_per_company} rows of each industry")
    )
    console.rule("[bold]Regulatory data sandbox: demo")
    console.print(f"Data: Census-Income (KDD) 1994-95 workers, one company per industry ({size}).")
    console.print(f"Home: {settings.home}   Database: {settings.database_url.split('@')[-1]}")
    started = time.monotonic()
    with progress_bar() as bar:
        total = options.industries or 23
        task = bar.add_task("companies join", total=total)

        def joined(text: str) -> None:
            bar.update(task, description=text, advance=0)

        def step(text: str) -> None:
            joined(text)
            bar.advance(task)

        members = demo_mod.join_census_companies(settings, options, step=step)
        vouchers = demo_mod.issue_demo_vouchers(settings, members)
        bar.update(
            task,
            description=f"{len(members)} companies joined",
            completed=len(members),
            total=len(members),
        )
    console.print(f"The operator issued {vouchers} compute vouchers of "
                  f"{demo_mod.DEMO_VOUCHER} EUR (small firms, first job).")  # fmt: skip
    spec = demo_mod.demo_spec(members, options, get_governance(settings))
    try:
        filed = demo_mod.file_demo_job(settings, spec)
    except (SandboxError, RuntimeError) as exc:
        fail(str(exc))
    console.print(
        f"Job [bold]{filed.job_id}[/] filed: purpose {spec.purpose}, "
        f"spec hash {filed.spec_hash[:16]}…"
    )
    for done in filed.steps:
        console.print(f"  {done}")
    with progress_bar() as bar:
        outcome = demo_mod.run_demo_job(settings, filed.job_id, RoundProgress(bar, spec.rounds))
    if outcome["status"] != "completed":
        fail(f"the job ended {outcome['status']}: {outcome['reason']}")
    settlement = demo_mod.settle_demo_job(settings, filed.job_id)
    report = demo_mod.build_report(settings, filed.job_id, options)
    report["settlement"] = settlement
    report["seconds"] = round(time.monotonic() - started, 1)
    print_demo_table(report)
    print_assessment(report.get("assessment"))
    print_fairness(report.get("assessment"))
    print_attributions(report.get("assessment"))
    print_release(report.get("release"))
    print_contributions(report.get("contributions"))
    print_statement(settlement)
    print_ledger(report.get("ledger"), settings.home, report["job"]["id"])
    if json_path is not None:
        demo_mod.write_json(json_path, report)
        console.print(f"Results written to {json_path}")


def print_ledger(ledger: dict[str, Any] | None, home: Path, job_id: str) -> None:
    """The regulator's check at the end of the demo: what the ledger holds about the job."""
    if not ledger:
        return
    held = ", ".join(f"{count} {action}" for action, count in sorted(ledger["job_entries"].items()))
    verdict = "[green]verifies[/]" if ledger["verifies"] else "[red]FAILS[/]"
    console.print(
        f"Ledger: {ledger['size']} entries, {ledger['checkpoints']} signed checkpoints, {verdict} "
        "(every hash recomputed, every checkpoint's signature checked)."
    )
    cosigned = ledger.get("cosignatures_per_checkpoint") or []
    witnessed = [n for n in cosigned if n > 0]
    console.print(
        f"  witnessed by the companies' nodes (C2SP cosignatures): {len(witnessed)} of "
        f"{len(cosigned)} checkpoints, {max(cosigned, default=0)} cosignatures at most on one, "
        f"{cosigned[-1] if cosigned else 0} on the latest"
    )
    for problem in ledger["problems"]:
        console.print(f"  [red]{problem}[/]")
    console.print(f"  about this job: {held}")
    refused = ledger["receipts_refused"]
    console.print(
        f"  {ledger['receipts']} signed receipts checked against the companies' public keys: "
        + ("all verify" if not refused else f"[red]{len(refused)} do not[/]: {'; '.join(refused)}")
    )
    console.print(
        f"  Check it yourself: SANDBOX_HOME={home} sandbox audit verify; "
        f"the compliance report: sandbox report {job_id}"
    )


def print_demo_table(report: dict[str, Any]) -> None:
    table = Table(title="ROC AUC (balanced accuracy) on each company's own held-out test split")
    table.add_column("company")
    table.add_column("rows", justify="right")
    table.add_column("test +", justify="right")
    table.add_column("local-only", justify="right")
    table.add_column("federated", justify="right")
    table.add_column("pooled*", justify="right")
    for row in report["companies"]:
        cells = []
        for kind in ("local", "federated", "pooled"):
            figures = row[kind]
            cells.append(f"{fmt(figures['auc'])} ({fmt(figures['balanced_accuracy'], 2)})")
        table.add_row(row["company"], str(row["rows"]), str(row["test_positives"]), *cells)
    console.print(table)
    console.print(f"* {report['labels']['pooled']}")
    s = report["summary"]
    mean = s["mean_auc"]
    console.print(
        f"[bold]Summary:[/] mean AUC local-only {fmt(mean['local'])}, "
        f"federated {fmt(mean['federated'])}, pooled {fmt(mean['pooled'])} "
        f"(federated - pooled {fmt(s['federated_minus_pooled_auc'], 4)}); federated beats "
        f"local-only at {s['federated_beats_local']} of {s['comparable_companies']} companies"
        + (
            f"; AUC undefined (one class in test split) at {', '.join(s['undefined_auc'])}"
            if s["undefined_auc"]
            else ""
        )
        + "."
    )


def print_assessment(assessment: dict[str, Any] | None) -> None:
    if not assessment:
        return
    table = Table(
        title="Release assessment: the federated model on each company's test split "
        "(computed there), beside its local-only model"
    )
    for name in ("company", "test +/-", "federated", "local-only", "gap [95% interval]", "ECE"):
        table.add_column(name, justify="left" if name == "company" else "right")
    table.add_column("AUC noise", justify="right")
    table.add_column("AUC missing (worst feature)", justify="right")
    table.add_column(
        f"AUC shift of {assessment['robustness']['shift_column']} (worst category)",
        justify="right",
    )

    def perturbed_cell(figures: dict[str, Any], detail: str) -> str:
        if figures.get("auc") is None:
            return "-"
        return f"{fmt(figures['auc'])} ({figures.get(detail, '-')})"

    for row in assessment["companies"]:
        perturbed = row["perturbed"]
        table.add_row(
            row["company"],
            f"{row['test_positives']}/{row['test_rows'] - row['test_positives']}",
            fmt(row["federated"]["auc"]) + interval_text(row.get("auc_interval")),
            fmt((row["local"] or {}).get("auc")),
            fmt(row["auc_gap"]) + interval_text(row.get("gap_interval")),
            fmt(row["federated"]["ece"]),
            fmt(perturbed.get("noise", {}).get("auc")),
            perturbed_cell(perturbed.get("missing", {}), "feature"),
            perturbed_cell(perturbed.get("shift", {}), "category"),
        )
    console.print(table)
    drops = ", ".join(f"{k} {fmt(v)}" for k, v in assessment["robustness_drop"].items())
    console.print(
        f"AUC over all companies' test rows (from their summed histograms) "
        f"{pooled_auc_text(assessment.get('pooled_auc'))}. "
        f"Worst-company gap (local-only AUC - federated AUC) {fmt(assessment['worst_company_gap'])}"
        f" ({assessment['worst_company'] or '-'}); largest bounds of the companies' 95% gap "
        f"intervals: lower {fmt(assessment.get('worst_company_gap_low'))}, upper "
        f"{fmt(assessment.get('worst_company_gap_high'))}; fewest test positives "
        f"{assessment.get('fewest_test_positives', '-')}, negatives "
        f"{assessment.get('fewest_test_negatives', '-')}; {calibration_text(assessment)}; calibration error the gate judged "
        f"{fmt(assessment['calibration_error'])}; mean AUC drop under perturbation: {drops}."
        + (
            f" Not assessed: {', '.join(sorted(assessment['not_assessed']))}."
            if assessment["not_assessed"]
            else ""
        )
    )


def pooled_auc_text(pooled: dict[str, float] | None) -> str:
    if not pooled:
        return "undefined"
    return f"{fmt(pooled['estimate'])} [{fmt(pooled['low'])}, {fmt(pooled['high'])}]"


def calibration_text(assessment: dict[str, Any]) -> str:
    calibration = assessment.get("calibration")
    if not calibration:
        return "not calibrated"
    return (
        f"calibrated by Platt scaling from the companies' histograms (expected calibration error "
        f"{fmt(calibration['ece_before'])} before, {fmt(calibration['ece_after'])}"
        f"{interval_text(calibration.get('ece_after_interval'))} after, on held-out halves)"
    )


def print_fairness(assessment: dict[str, Any] | None) -> None:
    """Outcomes by group of each protected attribute, over all companies' test rows."""
    fairness = (assessment or {}).get("fairness") or {}
    if not fairness.get("attributes"):
        return
    table = Table(title="Fairness: the federated model's outcomes by group of each protected "
                        "attribute (all companies' test rows; counts summed from the companies)")  # fmt: skip
    for name in ("attribute", "group", "rows (+)", "TPR", "FPR", "positive rate", "AUC"):
        table.add_column(name, justify="left" if name in ("attribute", "group") else "right")
    for attribute, entry in fairness["attributes"].items():
        for g in entry["groups"]:
            mark = "" if g["judged"] else " (too few to compare)"
            table.add_row(attribute, g["group"] + mark, f"{g['rows']} ({g['positives']})",
                          fmt(g["tpr"]), fmt(g["fpr"]), fmt(g["positive_rate"]), fmt(g["auc"]))  # fmt: skip
    console.print(table)
    console.print(
        f"Largest gaps between groups: true-positive rate {fmt(fairness.get('tpr_gap'))}, "
        f"false-positive rate {fmt(fairness.get('fpr_gap'))}, positive-prediction rate "
        f"{fmt(fairness.get('parity_difference'))} (demographic parity; reported, not gated)."
    )


def print_attributions(assessment: dict[str, Any] | None, top: int = 8) -> None:
    """What drives the model: the top features by permutation importance."""
    rows = (assessment or {}).get("attributions") or []
    if not rows:
        return
    table = Table(title=f"What drives the model: the top {min(top, len(rows))} features")
    for name in ("feature", "AUC lost when shuffled", "standardised weight"):
        table.add_column(name, justify="left" if name == "feature" else "right")
    for row in rows[:top]:
        coefficient = row.get("coefficient") or {}
        weight = coefficient.get("weight")
        detail = (
            f" ({coefficient['raises_odds_most']} highest)"
            if "raises_odds_most" in coefficient
            else ""
        )
        table.add_row(row["feature"] + (" [protected]" if row["protected"] else ""),
                      fmt(row.get("permutation_auc_drop")),
                      ("-" if weight is None else f"{weight:+.3f}") + detail)  # fmt: skip
    console.print(table)


def interval_text(bounds: list[float] | None) -> str:
    return "" if not bounds else f" [{fmt(bounds[0])}, {fmt(bounds[1])}]"


VERDICTS = {
    "allow": "[bold green]ALLOWED[/]",
    "deny": "[bold red]DENIED[/]",
    "insufficient-evidence": "[bold yellow]HELD: insufficient evidence[/] (a regulator reviews)",
}


def print_release(release: dict[str, Any] | None) -> None:
    if not release:
        return
    outcome = release.get("outcome", "allow" if release["allowed"] else "deny")
    verdict = VERDICTS.get(outcome, outcome)
    console.print(
        f"[bold]Release decision:[/] {verdict} ({release['tier']} tier; {release['decided_by']});"
        f" model SHA-256 {release['model_hash']}"
    )
    for check in release.get("checks", []):
        mark = "[green]pass[/]" if check["passed"] else "[red]FAIL[/]"
        console.print(f"  {mark} {check['reason']}")
    console.print(
        f"  exported to {release['exported_to']}"
        if release["exported_to"]
        else "  nothing exported: the model stays in the job's run folder"
    )


def print_contributions(contributions: dict[str, Any] | None) -> None:
    if not contributions:
        return
    if "error" in contributions:
        console.print(f"[bold]Contributions:[/] not estimated ({contributions['error']})")
        return
    table = Table(title="Contribution of each company (basis for sharing revenue)")
    table.add_column("company")
    table.add_column("rounds", justify="right")
    table.add_column("leave-one-out", justify="right")
    table.add_column("Shapley estimate", justify="right")
    table.add_column("share", justify="right")

    def signed(value: float | None) -> str:
        return "-" if value is None else f"{value:+.4f}"

    for row in sorted(contributions["companies"], key=lambda c: -(c["share"] or 0.0)):
        share = "-" if row["share"] is None else f"{row['share']:.1%}"
        table.add_row(
            row["company"],
            str(row["rounds"]),
            signed(row["leave_one_out"]),
            signed(row["shapley"]),
            share,
        )
    console.print(table)
    if contributions["method"] == "training rows":
        console.print("Method: shares by training rows. " + " ".join(contributions["notes"]))
        return
    skipped = len(contributions["rounds_skipped"])
    console.print(
        f"Method: {contributions['method']} over {len(contributions['rounds_used'])} rounds"
        + (f" ({skipped} skipped: utility barely moved)" if skipped else "")
        + f"; {contributions['models_scored']} coalition models scored by the companies. "
        f"Utility: {contributions['utility']}. Shares: positive Shapley estimates normalised; "
        "zero or negative estimates get no share."
        + (" " + " ".join(contributions["notes"]) if contributions.get("notes") else "")
    )
