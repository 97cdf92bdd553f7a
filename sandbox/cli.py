"""The ``sandbox`` command: demo, companies, jobs (and, mounted from their modules, audit,
policy, db, federation). A face only: every command calls the same service functions as the API.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

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
from sandbox.registry.errors import RegistryError

app = typer.Typer(help="The regulatory data sandbox.", no_args_is_help=True, add_completion=False)
company_app = typer.Typer(help="Companies: join, datasets, consents.", no_args_is_help=True)
job_app = typer.Typer(help="Engineers: file, run and inspect training jobs.", no_args_is_help=True)
app.add_typer(company_app, name="company")
app.add_typer(job_app, name="job")
app.add_typer(policy_app, name="policy")
app.add_typer(db_app, name="db")
app.add_typer(federation_app, name="federation")

console = Console()
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
    engine = get_engine(settings.database_url)
    from sandbox.registry import service

    spec = demo_mod.demo_spec(joined_ids, options)
    job = service.file_job(engine, spec, filed_by="demo-engineer")
    console.print(
        f"Job [bold]{job.id}[/] filed: purpose {spec.purpose}, spec hash {job.spec_hash[:16]}…"
    )
    from coordinator.simulation import run_on_simulation

    with progress_bar() as bar:
        outcome = run_on_simulation(settings, job.id, progress=RoundProgress(bar, spec.rounds))
    if outcome["status"] != "completed":
        fail(f"the job ended {outcome['status']}: {outcome['reason']}")
    report = demo_mod.build_report(settings, job.id, options)
    report["seconds"] = round(time.monotonic() - started, 1)
    print_demo_table(report)
    if json_path is not None:
        demo_mod.write_json(json_path, report)
        console.print(f"Results written to {json_path}")


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
    from sandbox.onboarding import onboard_company

    settings = load_settings()
    try:
        table = load_company_file(data, manifest)
        done = onboard_company(
            get_engine(settings.database_url),
            settings.company_dir(company_id),
            company_id,
            name or company_id,
            table,
            purposes=tuple(purpose),
            valid_for=timedelta(days=valid_days),
            seed=seed,
        )
    except DataValidationError as exc:
        err.print("[bold red]The data cannot be registered:[/]")
        for problem in exc.problems:
            err.print(f"  - {problem}")
        raise typer.Exit(1) from exc
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
    from sandbox.onboarding import onboard_company

    settings = load_settings()
    if industry not in census.industries():
        fail(f"unknown industry {industry!r}; choose one of: {', '.join(census.industries())}")
    company_id = census.slug(industry)
    try:
        done = onboard_company(
            get_engine(settings.database_url),
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
    from sandbox.registry import service

    try:
        spec = load_job_spec(spec_file)
        job = service.file_job(get_engine(load_settings().database_url), spec, filed_by=filed_by)
    except JobSpecError as exc:
        err.print("[bold red]The job spec cannot be filed:[/]")
        for problem in exc.problems:
            err.print(f"  - {problem}")
        raise typer.Exit(1) from exc
    except RegistryError as exc:
        fail(str(exc))
    console.print(f"Job [bold]{job.id}[/] filed (spec hash {job.spec_hash}); status {job.status}")


@job_app.command("run")
def job_run(job_id: str = typer.Argument(...)) -> None:
    """Run a filed job on the simulation engine, with a progress bar."""
    from coordinator.simulation import run_on_simulation
    from sandbox.registry import service

    settings = load_settings()
    try:
        spec = service.job_spec(service.get_job(get_engine(settings.database_url), job_id))
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
