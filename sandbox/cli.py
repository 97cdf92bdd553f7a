"""The ``sandbox`` command: demo, companies, jobs (and, mounted from their modules, audit,
policy, db, federation). A face only: every command calls the same service functions as the API.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from policies.cli import policy_app
from sandbox.config import load_settings
from sandbox.data.validation import DataValidationError
from sandbox.db import get_engine
from sandbox.db_cli import db_app
from sandbox.federation.cli import federation_app
from sandbox.jobspec import JobSpecError, load_job_spec
from sandbox.ledger.cli import audit_app
from sandbox.registry.errors import RegistryError

app = typer.Typer(help="The regulatory data sandbox.", no_args_is_help=True, add_completion=False)
company_app = typer.Typer(help="Companies: join, datasets, consents.", no_args_is_help=True)
job_app = typer.Typer(help="Engineers: file, run and inspect training jobs.", no_args_is_help=True)
principal_app = typer.Typer(
    help="The operator: principals of the API (engineers, regulators, operators) and their keys.",
    no_args_is_help=True,
)
token_app = typer.Typer(
    help="API tokens: issue, revoke, sign a token request.", no_args_is_help=True
)
app.add_typer(company_app, name="company")
app.add_typer(job_app, name="job")
app.add_typer(policy_app, name="policy")
app.add_typer(audit_app, name="audit")
app.add_typer(db_app, name="db")
app.add_typer(federation_app, name="federation")
app.add_typer(principal_app, name="principal")
app.add_typer(token_app, name="token")

# Piped output (logs, CI) gets a wide page so that tables keep their columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


class RoundProgress:
    """A Rich progress bar fed by the coordinator's stages and rounds."""

    def __init__(self, progress: Progress, total: int):
        self.progress = progress
        self.task = progress.add_task("starting", total=total)

    def stage(self, name: str) -> None:
        self.progress.update(self.task, description=name)

    def round_done(self, number: int, total: int, summary: dict[str, Any]) -> None:
        auc = (summary.get("evaluation") or {}).get("mean_auc")
        text = f"round {number}/{total}" + (f"  mean AUC {auc:.4f}" if auc is not None else "")
        self.progress.update(self.task, completed=number, description=text)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def data_problems(exc: DataValidationError, what: str) -> NoReturn:
    """Name every problem of a company's data file, then exit 1."""
    err.print(f"[bold red]The data cannot be {what}:[/]")
    for problem in exc.problems:
        err.print(f"  - {problem}")
    raise typer.Exit(1) from exc


def fmt(value: float | None, digits: int = 3) -> str:
    return "undefined" if value is None else f"{value:.{digits}f}"


# --------------------------------------------------------------------------- demo
@app.command()
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
    from sandbox import demo as demo_mod

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

        joined_ids = demo_mod.join_census_companies(
            settings, options, step=lambda t: (joined(t), bar.advance(task))
        )
        bar.update(
            task,
            description=f"{len(joined_ids)} companies joined",
            completed=len(joined_ids),
            total=len(joined_ids),
        )
    spec = demo_mod.demo_spec(joined_ids, options, settings)
    try:
        filed = demo_mod.file_demo_job(settings, spec, options)
    except (RegistryError, RuntimeError) as exc:
        fail(str(exc))
    console.print(
        f"Job [bold]{filed.job_id}[/] filed: purpose {spec.purpose}, spec hash {filed.spec_hash[:16]}…"
    )
    for step in filed.steps:
        console.print(f"  {step}")
    from coordinator.simulation import run_on_simulation

    with progress_bar() as bar:
        outcome = run_on_simulation(
            settings,
            filed.job_id,
            progress=RoundProgress(bar, spec.rounds),
            governed=options.governed,
        )
    if outcome["status"] != "completed":
        fail(f"the job ended {outcome['status']}: {outcome['reason']}")
    report = demo_mod.build_report(settings, filed.job_id, options)
    report["seconds"] = round(time.monotonic() - started, 1)
    print_demo_table(report)
    print_assessment(report.get("assessment"))
    print_release(report.get("release"))
    print_contributions(report.get("contributions"))
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
        f"[bold]Summary:[/] mean AUC local-only {fmt(mean['local'])}, federated {fmt(mean['federated'])}, "
        f"pooled {fmt(mean['pooled'])} (federated - pooled {fmt(s['federated_minus_pooled_auc'], 4)}); "
        f"federated beats local-only at {s['federated_beats_local']} of {s['comparable_companies']} companies"
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
    for name in ("company", "test +", "federated", "local-only", "gap", "ECE"):
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
            str(row["test_positives"]),
            fmt(row["federated"]["auc"]),
            fmt((row["local"] or {}).get("auc")),
            fmt(row["auc_gap"]),
            fmt(row["federated"]["ece"]),
            fmt(perturbed.get("noise", {}).get("auc")),
            perturbed_cell(perturbed.get("missing", {}), "feature"),
            perturbed_cell(perturbed.get("shift", {}), "category"),
        )
    console.print(table)
    drops = ", ".join(f"{k} {fmt(v)}" for k, v in assessment["robustness_drop"].items())
    console.print(
        f"Worst-company gap (local-only AUC - federated AUC) {fmt(assessment['worst_company_gap'])}"
        f" ({assessment['worst_company'] or '-'}); calibration error over all test rows "
        f"{fmt(assessment['calibration_error'])}; mean AUC drop under perturbation: {drops}."
        + (
            f" Not assessed: {', '.join(sorted(assessment['not_assessed']))}."
            if assessment["not_assessed"]
            else ""
        )
    )


def print_release(release: dict[str, Any] | None) -> None:
    if not release:
        return
    verdict = "[bold green]ALLOWED[/]" if release["allowed"] else "[bold red]DENIED[/]"
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


# ------------------------------------------------------------------------ company
@company_app.command("join")
def company_join(
    company_id: str = typer.Argument(..., help="Short id, e.g. acme-insurance"),
    data: Path = typer.Option(..., "--data", help="CSV or Parquet file with the company's rows"),
    manifest: Path = typer.Option(
        ..., "--manifest", help="Manifest (.toml or .json) describing the file"
    ),
    name: str | None = typer.Option(None, "--name"),
    purpose: list[str] = typer.Option(
        [], "--purpose", help="Grant consent for this purpose (repeatable)"
    ),
    valid_days: int = typer.Option(365, "--valid-days", min=1),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Join with your own data: your rows go to your node's vault; only the manifest is registered."""
    from sandbox.data.byod import load_company_file
    from sandbox.governance import get_governance
    from sandbox.operations import join

    settings = load_settings()
    try:
        table = load_company_file(data, manifest)
        done = join(
            get_governance(settings),
            settings.company_dir(company_id),
            company_id,
            name or company_id,
            table,
            purposes=tuple(purpose),
            valid_for=timedelta(days=valid_days),
            seed=seed,
        )
    except DataValidationError as exc:
        data_problems(exc, "registered")
    except (RegistryError, ValueError) as exc:
        fail(str(exc))
    console.print(
        f"[green]{company_id} joined[/]: dataset {done.dataset.id} ({done.dataset.row_count} rows, "
        f"grade {done.dataset.grade}), vault at {done.node_dir / 'vault'}; "
        f"consents: {', '.join(c.purpose for c in done.consents) or 'none'}"
    )


@company_app.command("join-census")
def company_join_census(
    industry: str = typer.Argument(..., help="A Census industry, e.g. 'Retail trade'"),
    rows: int | None = typer.Option(
        None, "--rows", min=20, help="Sample this many rows (a smaller firm)"
    ),
    purpose: list[str] = typer.Option([], "--purpose"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Join as one industry of the built-in census data."""
    from sandbox.data import census
    from sandbox.governance import get_governance
    from sandbox.operations import join

    settings = load_settings()
    if industry not in census.industries():
        fail(f"unknown industry {industry!r}; choose one of: {', '.join(census.industries())}")
    company_id = census.slug(industry)
    try:
        done = join(
            get_governance(settings),
            settings.company_dir(company_id),
            company_id,
            industry,
            census.company_table(industry, rows=rows, seed=seed),
            purposes=tuple(purpose),
            seed=seed,
        )
    except (RegistryError, ValueError) as exc:
        fail(str(exc))
    console.print(f"[green]{company_id} joined[/] with {done.dataset.row_count} rows")


@company_app.command("join-request")
def company_join_request(
    company_id: str = typer.Argument(..., help="Short id, e.g. acme-insurance"),
    data: Path = typer.Option(..., "--data", help="CSV or Parquet file with the company's rows"),
    manifest: Path = typer.Option(..., "--manifest", help="Manifest (.toml or .json)"),
    out: Path = typer.Option(..., "--out", help="Write the request body here"),
    name: str | None = typer.Option(None, "--name"),
    purpose: list[str] = typer.Option([], "--purpose", help="Consent to this purpose"),
    valid_days: int = typer.Option(365, "--valid-days", min=1, max=3650),
    node: Path | None = typer.Option(
        None, "--node", help="Your node folder (default: <SANDBOX_HOME>/companies/<id>)"
    ),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Prepare your node here (key, vault) and write a signed join request for the API:
    POST it to /companies with the printed X-Sandbox-Signature header. Rows stay here."""
    from sandbox.data.byod import load_company_file
    from sandbox.onboarding import prepare_node
    from sandbox.principals import join_request

    node_dir = node or load_settings().company_dir(company_id)
    try:
        table = load_company_file(data, manifest)
        key, filled = prepare_node(node_dir, company_id, table, seed)
    except DataValidationError as exc:
        data_problems(exc, "prepared")
    except (RegistryError, ValueError) as exc:
        fail(str(exc))
    body, signature = join_request(
        key, company_id, name or company_id, filled.industry, filled, tuple(purpose), valid_days
    )
    out.write_bytes(body)
    err.print(
        f"Node prepared at {node_dir}; request body written to {out} (sign-time bound: 5 min)"
    )
    typer.echo(f"X-Sandbox-Signature: {signature}")


@company_app.command("prepare-dataset")
def company_prepare_dataset(
    company_id: str = typer.Argument(..., help="Your company id"),
    data: Path = typer.Option(..., "--data", help="CSV or Parquet file with the rows"),
    manifest: Path = typer.Option(..., "--manifest", help="Manifest (.toml or .json)"),
    node: Path | None = typer.Option(
        None, "--node", help="Your node folder (default: <SANDBOX_HOME>/companies/<id>)"
    ),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Put another dataset into your node's vault and print the path of its filled-in
    manifest, the body of POST /companies/<id>/datasets. Rows stay here."""
    from sandbox.data.byod import load_company_file
    from sandbox.data.vault import VaultError, vault_path, write_vault
    from sandbox.node import NodeHome

    node_dir = node or load_settings().company_dir(company_id)
    if not NodeHome(node_dir).info_path.exists():
        fail(f"{node_dir} holds no company node; prepare it with `sandbox company join-request`")
    try:
        table = load_company_file(data, manifest)
        filled = write_vault(node_dir, table.frame, table.manifest, seed=seed)
    except DataValidationError as exc:
        data_problems(exc, "prepared")
    except (VaultError, ValueError) as exc:
        fail(str(exc))
    typer.echo(vault_path(node_dir, filled.name) / "manifest.json")


consent_app = typer.Typer(help="A company's consents: grant, revoke, list.", no_args_is_help=True)
company_app.add_typer(consent_app, name="consent")


@consent_app.command("grant")
def consent_grant(
    company_id: str = typer.Argument(...),
    purpose: str = typer.Option(..., "--purpose"),
    dataset: str = typer.Option("census", "--dataset"),
    valid_days: int = typer.Option(365, "--valid-days", min=1),
) -> None:
    """Grant consent of one dataset to one purpose (recorded in the registry, the ledger and
    the company's own node record)."""
    from sandbox.governance import get_governance
    from sandbox.operations import grant_consent

    settings = load_settings()
    try:
        consent = grant_consent(
            get_governance(settings),
            company_id,
            dataset,
            purpose,
            timedelta(days=valid_days),
            node_dir=settings.company_dir(company_id),
        )
    except (RegistryError, ValueError) as exc:
        fail(str(exc))
    console.print(
        f"Consent {consent.id}: {company_id}/{dataset} for {purpose} until {consent.expires_at:%Y-%m-%d}"
    )


@consent_app.command("revoke")
def consent_revoke(
    company_id: str = typer.Argument(...),
    consent_id: str = typer.Argument(...),
    reason: str = typer.Option("", "--reason"),
) -> None:
    """Revoke a consent: jobs using it go on without this company from their next round."""
    from sandbox.governance import get_governance
    from sandbox.operations import revoke_consent

    settings = load_settings()
    try:
        consent = revoke_consent(
            get_governance(settings),
            company_id,
            consent_id,
            reason,
            node_dir=settings.company_dir(company_id),
        )
    except (RegistryError, ValueError) as exc:
        fail(str(exc))
    console.print(f"Consent {consent.id} revoked")


@consent_app.command("list")
def consent_list(company_id: str = typer.Argument(...)) -> None:
    """The company's consents and whether each is live."""
    from sqlmodel import select

    from sandbox.db import session_scope
    from sandbox.registry.models import Consent, utcnow
    from sandbox.registry.service import as_utc

    engine = get_engine(load_settings().database_url)
    with session_scope(engine) as session:
        rows = session.exec(select(Consent).where(Consent.company_id == company_id)).all()
    table = Table("consent", "dataset", "purpose", "expires", "state")
    now = utcnow()
    for c in rows:
        state = (
            "revoked" if c.revoked_at else ("expired" if as_utc(c.expires_at) <= now else "live")
        )
        table.add_row(c.id, c.dataset_id, c.purpose, f"{c.expires_at:%Y-%m-%d}", state)
    console.print(table)


@company_app.command("list")
def company_list() -> None:
    """Companies in the registry with their datasets."""
    from sandbox.registry import service

    engine = get_engine(load_settings().database_url)
    table = Table("company", "industry", "datasets", "joined")
    for company in service.list_companies(engine):
        datasets = ", ".join(
            f"{d.name} ({d.row_count} rows, {d.grade})"
            for d in service.company_datasets(engine, company.id)
        )
        table.add_row(
            company.id, company.industry, datasets, company.joined_at.strftime("%Y-%m-%d %H:%M UTC")
        )
    console.print(table)


# ---------------------------------------------------------------------------- job
@job_app.command("file")
def job_file(
    spec_file: Path = typer.Argument(..., help="Job spec (.toml or .json)"),
    filed_by: str = typer.Option("engineer", "--as", help="The engineer filing the job"),
) -> None:
    """File a job spec; prints its id and hash."""
    from sandbox.governance import get_governance
    from sandbox.operations import file_job

    try:
        spec = load_job_spec(spec_file)
        filed = file_job(get_governance(), spec, engineer=filed_by)
    except JobSpecError as exc:
        err.print("[bold red]The job spec cannot be filed:[/]")
        for problem in exc.problems:
            err.print(f"  - {problem}")
        raise typer.Exit(1) from exc
    except RegistryError as exc:
        fail(str(exc))
    job = filed.job
    console.print(
        f"Job [bold]{job.id}[/] filed (spec hash {job.spec_hash}); risk tier {job.risk_tier}; "
        f"status [bold]{job.status}[/] (decision {filed.decision_id})"
    )
    for reason in filed.reasons:
        console.print(f"  - {reason}")
    if not filed.allowed:
        raise typer.Exit(1)


@job_app.command("approve")
def job_approve(
    job_id: str = typer.Argument(...),
    regulator: str = typer.Option("regulator", "--as", help="The regulator approving"),
    note: str = typer.Option("", "--note", help="Why (recorded)"),
) -> None:
    """Approve a job that awaits a regulator's approval (decided by policy, recorded)."""
    from sandbox.governance import get_governance
    from sandbox.operations import approve_job

    try:
        job = approve_job(get_governance(), regulator, job_id, note)
    except RegistryError as exc:
        fail(str(exc))
    console.print(f"Job {job.id} approved by {regulator}; it may now run")


@job_app.command("reject")
def job_reject(
    job_id: str = typer.Argument(...),
    reason: str = typer.Option(..., "--reason", help="Why (recorded)"),
    regulator: str = typer.Option("regulator", "--as"),
) -> None:
    """Reject a job that awaits approval, with a reason."""
    from sandbox.governance import get_governance
    from sandbox.operations import reject_job

    try:
        job = reject_job(get_governance(), regulator, job_id, reason)
    except RegistryError as exc:
        fail(str(exc))
    console.print(f"Job {job.id} rejected by {regulator}")


@job_app.command("run")
def job_run(job_id: str = typer.Argument(...)) -> None:
    """Run a filed job on the simulation engine, with a progress bar."""
    from coordinator.simulation import run_on_simulation
    from sandbox.operations import check_runnable
    from sandbox.registry import service

    settings = load_settings()
    try:
        job = service.get_job(get_engine(settings.database_url), job_id)
        check_runnable(job)
        spec = service.job_spec(job)
    except RegistryError as exc:
        fail(str(exc))
    with progress_bar() as bar:
        outcome = run_on_simulation(settings, job_id, progress=RoundProgress(bar, spec.rounds))
    console.print(
        f"Job {job_id}: {outcome['status']}"
        + (f" ({outcome['reason']})" if outcome["reason"] else "")
    )
    if outcome["status"] != "completed":
        raise typer.Exit(1)


@job_app.command("show")
def job_show(job_id: str = typer.Argument(...)) -> None:
    """A job's status, spec hash, rounds and result."""
    from sandbox.registry import service

    engine = get_engine(load_settings().database_url)
    try:
        job = service.get_job(engine, job_id)
    except RegistryError as exc:
        fail(str(exc))
    console.print(
        f"[bold]{job.id}[/]  purpose {job.purpose}  status {job.status}  spec hash {job.spec_hash}"
    )
    if job.status_reason:
        console.print(f"reason: {job.status_reason}")
    table = Table("round", "status", "took part", "missing", "rejected", "mean AUC")
    for record in service.job_rounds(engine, job_id):
        auc = (record.metrics.get("evaluation") or {}).get("mean_auc")
        table.add_row(
            str(record.number),
            record.status,
            str(len(record.took_part)),
            ", ".join(m["company"] for m in record.missing) or "-",
            ", ".join(r["company"] for r in record.rejected) or "-",
            fmt(auc, 4),
        )
    console.print(table)
    if job.model_hash:
        console.print(f"model hash {job.model_hash}")
    for release in service.job_releases(engine, job_id):
        console.print(
            f"release {'allowed' if release.allowed else 'denied'} ({release.tier} tier, "
            f"{release.decided_at:%Y-%m-%d %H:%M} UTC): {'; '.join(release.reasons)}"
            + (f"; exported to {release.exported_to}" if release.exported_to else "")
        )


# -------------------------------------------------------------------------- report
@app.command()
def report(
    job_id: str = typer.Argument(..., help="The job's id"),
    out: Path = typer.Option(Path("."), "--out", help="Folder for the HTML and JSON files"),
    regulator: str = typer.Option("regulator", "--as", help="The regulator exporting it"),
) -> None:
    """Write a job's compliance report: one self-contained HTML file and the same facts as
    JSON, every line with its ledger index and signed checkpoint (an audit export, decided by
    policy and recorded)."""
    from sandbox.governance import get_governance
    from sandbox.ledger import LedgerError
    from sandbox.operations import compliance_report
    from sandbox.reports.document import write_report

    try:
        made = compliance_report(get_governance(), "regulator", regulator, job_id)
    except (RegistryError, LedgerError) as exc:
        fail(str(exc))
    html, data = write_report(made, out)
    console.print(f"Compliance report of job {job_id}: {html} and {data}")
    console.print(
        f"{len(made.facts)} statements, each with its ledger index; check any with "
        "`sandbox audit proof INDEX`"
    )


# -------------------------------------------------------------------------- serve
@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Serve the HTTP API (OpenAPI documentation at /docs; GET /health for health checks)."""
    from sandbox.api.server import serve as run_server

    run_server(host, port, load_settings(), log_level)


# --------------------------------------------------------------------- principals
def _public_key_of(public_key: str | None, key_file: Path | None, new_key: Path | None) -> str:
    from sandbox import identity

    given = [v for v in (public_key, key_file, new_key) if v is not None]
    if len(given) != 1:
        fail("give exactly one of --public-key, --key-file or --new-key")
    if public_key is not None:
        return public_key
    if key_file is not None:
        try:
            return identity.public_b64(identity.read_private_key(key_file))
        except identity.KeyFileError as exc:
            fail(str(exc))
    assert new_key is not None
    if new_key.exists():
        fail(f"{new_key} exists already; choose a new path for the new private key")
    key = identity.generate_key()
    identity.write_private_key(new_key, key)
    console.print(f"New private key written to {new_key} (0600); keep it to yourself.")
    return identity.public_b64(key)


@principal_app.command("add")
def principal_add(
    principal_id: str = typer.Argument(..., help="Short id, e.g. reg-anna"),
    role: str = typer.Option(..., "--role", help="engineer, regulator or operator"),
    public_key: str | None = typer.Option(None, "--public-key", help="base64 Ed25519 key"),
    key_file: Path | None = typer.Option(None, "--key-file", help="the principal's PEM key"),
    new_key: Path | None = typer.Option(
        None, "--new-key", help="make a new key pair; write the private key here"
    ),
    organisation: str | None = typer.Option(None, "--organisation"),
) -> None:
    """Register a principal with its public key, as the operator (decided and recorded)."""
    from policies.facts import OperatorFacts
    from sandbox.governance import get_governance
    from sandbox.operations import register_principal
    from sandbox.principals import OPERATOR_ID, ensure_operator

    settings = load_settings()
    gov = get_governance(settings)
    ensure_operator(gov.engine, settings.keys_dir)
    key = _public_key_of(public_key, key_file, new_key)
    try:
        added = register_principal(
            gov, OperatorFacts(OPERATOR_ID), principal_id, role, key, organisation
        )
    except (RegistryError, ValueError) as exc:
        fail(str(exc))
    console.print(f"{added.role} [bold]{added.id}[/] registered with key {key}")


@principal_app.command("list")
def principal_list() -> None:
    """The registered principals (companies are principals by joining)."""
    from sandbox.principals import list_principals

    table = Table("principal", "role", "organisation", "status", "public key")
    for p in list_principals(get_engine(load_settings().database_url)):
        table.add_row(p.id, p.role, p.organisation or "", p.status, p.public_key)
    console.print(table)


@principal_app.command("disable")
def principal_disable(principal_id: str = typer.Argument(...)) -> None:
    """Disable a principal and revoke its tokens, as the operator."""
    from policies.facts import OperatorFacts
    from sandbox.governance import get_governance
    from sandbox.operations import disable_principal
    from sandbox.principals import OPERATOR_ID

    try:
        disabled = disable_principal(get_governance(), OperatorFacts(OPERATOR_ID), principal_id)
    except (RegistryError, ValueError) as exc:
        fail(str(exc))
    console.print(f"{disabled.role} {disabled.id} disabled; its tokens are revoked")


# ------------------------------------------------------------------------- tokens
@token_app.command("issue")
def token_issue(
    principal_id: str = typer.Argument(..., help="A principal or company id"),
    role: str = typer.Option(..., "--role", help="company, engineer, regulator or operator"),
    ttl_hours: float = typer.Option(8.0, "--ttl-hours", min=0.01, max=720),
) -> None:
    """Issue a token on the sandbox's own machine (tests, demos); it is printed once."""
    from sandbox.governance import get_governance
    from sandbox.operations import issue_token_locally
    from sandbox.principals import ensure_operator

    settings = load_settings()
    gov = get_governance(settings)
    ensure_operator(gov.engine, settings.keys_dir)
    try:
        issued = issue_token_locally(gov, role, principal_id, timedelta(hours=ttl_hours))
    except (RegistryError, ValueError) as exc:
        fail(str(exc))
    err.print(
        f"token {issued.record.id} for {role} {principal_id}, expires {issued.record.expires_at:%Y-%m-%d %H:%M} UTC"
    )
    typer.echo(issued.token)


@token_app.command("revoke")
def token_revoke(token_id: str = typer.Argument(..., help="The token's id (tok-...)")) -> None:
    """Revoke a token, as the operator."""
    from policies.facts import OperatorFacts
    from sandbox.governance import get_governance
    from sandbox.operations import revoke_token
    from sandbox.principals import OPERATOR_ID

    try:
        revoke_token(get_governance(), OperatorFacts(OPERATOR_ID), token_id)
    except (RegistryError, ValueError) as exc:
        fail(str(exc))
    console.print(f"token {token_id} revoked")


@token_app.command("sign-request")
def token_sign_request(
    key_file: Path = typer.Option(..., "--key", help="your Ed25519 private key (PEM)"),
    principal_id: str = typer.Option(..., "--id"),
    role: str = typer.Option(..., "--role"),
    ttl_hours: float = typer.Option(8.0, "--ttl-hours", min=0.02, max=720),
) -> None:
    """Print a signed token request, the body of POST /auth/token (valid for 5 minutes)."""
    import json

    from sandbox import identity
    from sandbox.principals import sign_token_request

    try:
        key = identity.read_private_key(key_file)
    except identity.KeyFileError as exc:
        fail(str(exc))
    body = sign_token_request(key, role, principal_id)
    typer.echo(json.dumps({**body, "ttl_seconds": int(ttl_hours * 3600)}))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
