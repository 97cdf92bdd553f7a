"""``sandbox job``: file, approve or reject, run, show; and ``sandbox report``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from sandbox import identity
from sandbox.cli.render import (
    RoundProgress,
    acting,
    console,
    err,
    fail,
    fmt,
    governance,
    progress_bar,
)
from sandbox.config import load_settings
from sandbox.errors import SandboxError
from sandbox.identity.installation import installation_regulator_key
from sandbox.ledger import LedgerError
from sandbox.protocol.jobspec import JobSpecError, load_job_spec
from sandbox.services import audit as audit_service
from sandbox.services import jobs as job_service
from sandbox.vocabulary import INSTALLATION_REGULATOR

job_app = typer.Typer(help="Engineers: file, run and inspect training jobs.", no_args_is_help=True)

KEY_FILE: Any = typer.Option(
    None,
    "--key-file",
    help="The regulator's Ed25519 private key (PEM); the installation's regulator "
    "'regulator' signs with the sandbox home's regulator key",
)
AS_HELP = "Who acts: a registered principal or company id (its role is the registry's)"


@job_app.command("file")
def job_file(
    spec_file: Path = typer.Argument(..., help="Job spec (.toml or .json)"),
    filed_by: str = typer.Option("engineer", "--as", help="The engineer filing the job"),
    id_only: bool = typer.Option(
        False, "--id-only", help="Print the new job's id alone (for scripts: JOB=$(...))."
    ),
) -> None:
    """File a job spec; prints the settings it runs with, its id, hash, risk tier and
    admission."""
    gov = governance()
    try:
        spec = load_job_spec(spec_file)
        if not id_only:
            _effective(spec_file, spec)
        filed = job_service.file_job(gov, spec, acting(gov, filed_by, "engineer"))
    except JobSpecError as exc:
        err.print("[bold red]The job spec cannot be filed:[/]")
        for problem in exc.problems:
            err.print(f"  - {problem}")
        raise typer.Exit(1) from exc
    except SandboxError as exc:
        fail(str(exc))
    job = filed.job
    if id_only:
        if not filed.allowed:
            fail(f"job {job.id} was not admitted: " + " ".join(filed.reasons))
        typer.echo(job.id)
        return
    console.print(
        f"Job [bold]{job.id}[/] filed (spec hash {job.spec_hash}); risk tier {job.risk_tier}; "
        f"status [bold]{job.status}[/] (decision {filed.decision_id})"
    )
    for reason in filed.reasons:
        console.print(f"  - {reason}")
    if filed.approval_by:
        console.print(f"  awaits a regulator's approval ({', '.join(filed.approval_by)})")
    if not filed.allowed:
        raise typer.Exit(1)


def _effective(spec_file: Path, spec: Any) -> None:
    """Print the settings the job runs with and where each comes from."""
    from sandbox.files import DocumentError, read_document
    from sandbox.protocol.jobspec import effective_settings

    try:
        raw = read_document(spec_file, "job spec")
    except DocumentError:
        return
    table = Table("setting", "value", "from")
    for name, value, source in effective_settings(raw, spec):
        table.add_row(name, str(value), source)
    console.print(table)


@job_app.command("approve")
def job_approve(
    job_id: str = typer.Argument(...),
    regulator: str = typer.Option("regulator", "--as", help="The regulator approving"),
    note: str = typer.Option("", "--note", help="Why (recorded)"),
    key_file: Path | None = KEY_FILE,
) -> None:
    """Approve a job that awaits a regulator's approval: signed with the regulator's key
    (the signature travels in the job's warrant to every company's node), decided by
    policy, recorded."""
    gov = governance()
    try:
        key = _regulator_key(gov, regulator, key_file, "approving")
        actor = acting(gov, regulator, "regulator")
        job = job_service.approve_with_key(gov, actor, job_id, note, key)
    except (SandboxError, identity.KeyFileError) as exc:
        fail(str(exc))
    console.print(f"Job {job.id} approved by {regulator}; it may now run")


@job_app.command("review-release")
def job_review_release(
    job_id: str = typer.Argument(...),
    approve: bool = typer.Option(
        ..., "--approve/--reject", help="Release the held model, or keep it withheld"
    ),
    regulator: str = typer.Option("regulator", "--as", help="The regulator reviewing"),
    note: str = typer.Option("", "--note", help="Why (recorded; required to reject)"),
    key_file: Path | None = KEY_FILE,
) -> None:
    """Review a model the release gate held for want of evidence: signed with the
    regulator's key (the signature goes into the model card), decided by policy, recorded.
    An approval asks the release policy again with the review; it cannot overturn evidence
    that a limit is exceeded."""
    from sandbox.services import releases

    gov = governance()
    try:
        key = _regulator_key(gov, regulator, key_file, "reviewing a release")
        actor = acting(gov, regulator, "regulator")
        release = releases.review_with_key(gov, actor, job_id, approve, note, key)
    except (SandboxError, identity.KeyFileError) as exc:
        fail(str(exc))
    if release.allowed:
        console.print(f"Job {job_id}'s model released after review by {regulator}: "
                      f"{release.exported_to}")  # fmt: skip
    else:
        console.print(f"Job {job_id}'s model stays withheld: {' '.join(release.reasons)}")


def _regulator_key(gov: Any, regulator: str, key_file: Path | None, doing: str) -> Any:
    if key_file is not None:
        return identity.read_private_key(key_file)
    if regulator == INSTALLATION_REGULATOR:
        return installation_regulator_key(gov.settings, f"{doing} as 'regulator'")
    fail(f"regulator {regulator} signs with its own key: give --key-file")


@job_app.command("reject")
def job_reject(
    job_id: str = typer.Argument(...),
    reason: str = typer.Option(..., "--reason", help="Why (recorded)"),
    regulator: str = typer.Option("regulator", "--as"),
) -> None:
    """Reject a job that awaits approval, with a reason."""
    gov = governance()
    try:
        job = job_service.reject_job(gov, acting(gov, regulator, "regulator"), job_id, reason)
    except SandboxError as exc:
        fail(str(exc))
    console.print(f"Job {job.id} rejected by {regulator}")


@job_app.command("run")
def job_run(
    job_id: str = typer.Argument(...),
    as_: str | None = typer.Option(
        None, "--as", help="Who starts it (default: the engineer who filed it)"
    ),
) -> None:
    """Start a job on the simulation engine, with a progress bar (decided by policy and
    recorded like a start through the API; a run that died is resumed)."""
    from sandbox.runtime.simulation import run_on_simulation

    settings = load_settings()
    gov = governance()
    try:
        job = job_service.store_job(gov, job_id)
        starter = acting(gov, as_ or job.filed_by, "engineer")
        rounds = int(job.spec.get("rounds", 0))
        with progress_bar() as bar:
            outcome = run_on_simulation(
                settings, job_id, actor=starter, progress=RoundProgress(bar, rounds)
            )
    except SandboxError as exc:
        fail(str(exc))
    console.print(
        f"Job {job_id}: {outcome['status']}"
        + (f" ({outcome['reason']})" if outcome["reason"] else "")
    )
    if outcome["status"] != "completed":
        raise typer.Exit(1)


@job_app.command("show")
def job_show(
    job_id: str = typer.Argument(...),
    as_: str = typer.Option("regulator", "--as", help=AS_HELP),
) -> None:
    """A job's status, spec hash, rounds and release decisions."""
    gov = governance()
    try:
        overview = job_service.job_overview(gov, acting(gov, as_, "regulator"), job_id)
    except SandboxError as exc:
        fail(str(exc))
    job = overview.job
    console.print(
        f"[bold]{job.id}[/]  purpose {job.purpose}  status {job.status}  spec hash {job.spec_hash}"
    )
    if job.status_reason:
        console.print(f"reason: {job.status_reason}")
    table = Table("round", "status", "took part", "missing", "rejected", "mean AUC")
    for record in overview.rounds:
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
    _per_company(job.result or {})
    if job.model_hash:
        console.print(f"model hash {job.model_hash}")
    for release in overview.releases:
        console.print(
            f"release {'allowed' if release.allowed else 'denied'} ({release.tier} tier, "
            f"{release.decided_at:%Y-%m-%d %H:%M} UTC): {'; '.join(release.reasons)}"
            + (f"; exported to {release.exported_to}" if release.exported_to else "")
        )
    if overview.releases and not overview.releases[-1].allowed:
        console.print("[bold red]the model was not released: it may not be used[/]")


def _per_company(result: dict[str, Any]) -> None:
    """Each company's AUC with the federated model beside its local-only model, as far as
    the reader may see (a company sees its own row)."""
    companies = result.get("companies") or {}
    if not companies:
        return
    table = Table("company", "AUC federated", "AUC local-only", "gap (local - federated)")
    for company, figures in sorted(companies.items()):
        federated = (figures.get("federated") or {}).get("auc")
        local = (figures.get("local") or {}).get("auc")
        gap = None if federated is None or local is None else local - federated
        table.add_row(company, fmt(federated, 4), fmt(local, 4), fmt(gap, 4))
    mean = result.get("mean_auc") or {}
    table.add_row("mean", fmt(mean.get("federated"), 4), fmt(mean.get("local"), 4), "")
    console.print(table)


@job_app.command("list")
def job_list(
    status: str | None = typer.Option(None, "--status", help="Only jobs in this status"),
    limit: int = typer.Option(50, "--limit", min=1, max=500),
    as_: str = typer.Option("regulator", "--as", help=AS_HELP),
) -> None:
    """Jobs, newest first: those the reader may list (an engineer's own, a company's, all
    for a regulator or the operator)."""
    gov = governance()
    try:
        reader = acting(gov, as_, "regulator")
        kind = getattr(reader, "KIND", "")
        found = job_service.list_jobs(
            gov,
            reader,
            engineer=reader.id if kind == "Engineer" else None,
            company=reader.id if kind == "Company" else None,
            status=status,
            limit=limit,
        )
    except SandboxError as exc:
        fail(str(exc))
    table = Table("job", "status", "purpose", "tier", "companies", "filed", "filed by")
    for job in found:
        table.add_row(job.id, job.status, job.purpose, job.risk_tier,
                      str(len(job.spec.get("companies", []))),
                      f"{job.filed_at:%Y-%m-%d %H:%M}", job.filed_by)  # fmt: skip
    console.print(table)


def report(
    job_id: str = typer.Argument(..., help="The job's id"),
    out: Path = typer.Option(Path("."), "--out", help="Folder for the HTML and JSON files"),
    regulator: str = typer.Option("regulator", "--as", help="The regulator exporting it"),
) -> None:
    """Write a job's compliance report: one self-contained HTML file and the same facts as
    JSON, every line with its ledger index and signed checkpoint (an audit export, decided by
    policy and recorded)."""
    from sandbox.reports.document import write_report

    gov = governance()
    try:
        made = audit_service.compliance_report(gov, acting(gov, regulator, "regulator"), job_id)
    except (SandboxError, LedgerError) as exc:
        fail(str(exc))
    html, data = write_report(made, out)
    console.print(f"Compliance report of job {job_id}: {html} and {data}")
    console.print(
        f"{len(made.facts)} statements, each with its ledger index; check any with "
        "`sandbox audit proof INDEX`"
    )
