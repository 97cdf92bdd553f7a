"""``sandbox company``: join, prepare datasets, grant and revoke consent, list."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from sandbox.cli.render import acting, console, data_problems, err, fail, governance
from sandbox.config import load_settings
from sandbox.data.validation import DataValidationError
from sandbox.errors import SandboxError
from sandbox.services import companies as company_service
from sandbox.services import consents as consent_service
from sandbox.services.companies import Joined

if TYPE_CHECKING:
    from sandbox.node.home import NodeHome

company_app = typer.Typer(help="Companies: join, datasets, consents.", no_args_is_help=True)
consent_app = typer.Typer(help="A company's consents: grant, revoke, list.", no_args_is_help=True)
company_app.add_typer(consent_app, name="consent")


@company_app.callback()
def _witness_alarms() -> None:
    """Before every company command: the alarms raised by the nodes in this sandbox home, as
    witnesses of the ledger (a history shown to them that does not extend what they
    cosigned), so that a company sees them at its next use of the CLI."""
    try:
        folders = sorted(load_settings().companies_dir.glob("*/witness/alarms"))
    except OSError:
        return
    for folder in folders:
        kept = sorted(folder.glob("*.json"))
        if kept:
            err.print(
                f"[bold red]LEDGER ALARM[/]: the node of {folder.parent.parent.name} refused "
                f"the sandbox's ledger {len(kept)} time(s): `sandbox company witness "
                f"{folder.parent.parent.name}` shows why; both signed notes are in {folder}"
            )


SEED_HELP = (
    "Seed of the node's split of the rows: 75% for training, 25% for testing, stratified by "
    "the target (the same seed and file give the same split). Not used with --test-data or a "
    "manifest's split_column."
)
TEST_DATA_HELP = (
    "Your own test rows (CSV or Parquet, the same columns): used exactly as the test split, "
    "and --data entirely for training."
)


def _joined(joined: Joined) -> None:
    dataset = joined.dataset
    assert dataset is not None
    folder = load_settings().company_dir(joined.company.id)
    manifest = dataset.manifest
    console.print(
        f"[green]{joined.company.id} joined[/]: dataset {dataset.id} ({dataset.row_count} rows, "
        f"grade {dataset.grade}), vault at {folder / 'vault'}; "
        f"consents: {', '.join(c.purpose for c in joined.consents) or 'none'}"
    )
    console.print(
        f"split: {manifest.get('train_rows')} rows for training, {manifest.get('test_rows')} for "
        f"testing ({manifest.get('split')}); only the test rows score models"
    )
    _imputed(folder, str(manifest.get("name")))
    _looks_personal(manifest)


def _looks_personal(raw: dict[str, Any]) -> None:
    """Flag a dataset declared non-personal whose columns look personal."""
    from sandbox.data.manifest import DatasetManifest, personal_looking_columns

    manifest = DatasetManifest.model_validate(raw)
    flagged = [] if manifest.personal_data else personal_looking_columns(manifest)
    if flagged:
        err.print(
            f"[yellow]note[/]: dataset {manifest.name} is declared to hold no personal data, "
            f"but its column(s) {', '.join(flagged)} look personal; if they are, declare "
            "personal_data = true (the review of your admission looks at this)"
        )


def _imputed(node_dir: Path, dataset: str) -> None:
    """What the node filled in from its training rows (it stays at the node)."""
    from sandbox.data.vault import Vault

    for column, what in Vault.open(node_dir, dataset).imputed().items():
        if what["train_blanks"] == what["test_blanks"] == 0:
            continue
        value = what["value"]
        shown = f"{value:.6g}" if isinstance(value, float) else str(value)
        console.print(
            f"blanks in {column}: {what['train_blanks']} training and {what['test_blanks']} "
            f"test rows filled with the {what['rule']} of the training rows ({shown})"
        )


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
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
    test_data: Path | None = typer.Option(None, "--test-data", help=TEST_DATA_HELP),
) -> None:
    """Join with your own data: your rows go to your node's vault; only the manifest is registered."""
    from sandbox.data.byod import load_company_file

    settings = load_settings()
    try:
        table = load_company_file(data, manifest, test_data)
        joined = company_service.join(
            governance(),
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
    except (SandboxError, ValueError) as exc:
        fail(str(exc))
    _joined(joined)
    if table.dropped_rows:
        console.print(f"{table.dropped_rows} row(s) with a blank target left out, as declared")


@company_app.command("join-census")
def company_join_census(
    industry: str = typer.Argument(..., help="A Census industry, e.g. 'Retail trade'"),
    rows: int | None = typer.Option(
        None, "--rows", min=20, help="Sample this many rows (a smaller firm)"
    ),
    purpose: list[str] = typer.Option([], "--purpose"),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample and of the node's split."),
) -> None:
    """Join as one industry of the built-in census data."""
    from sandbox.data import census

    settings = load_settings()
    if industry not in census.industries():
        fail(f"unknown industry {industry!r}; choose one of: {', '.join(census.industries())}")
    company_id = census.slug(industry)
    try:
        joined = company_service.join(
            governance(),
            settings.company_dir(company_id),
            company_id,
            industry,
            census.company_table(industry, rows=rows, seed=seed),
            purposes=tuple(purpose),
            seed=seed,
        )
    except (SandboxError, ValueError) as exc:
        fail(str(exc))
    assert joined.dataset is not None
    console.print(f"[green]{company_id} joined[/] with {joined.dataset.row_count} rows")


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
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
    test_data: Path | None = typer.Option(None, "--test-data", help=TEST_DATA_HELP),
) -> None:
    """Prepare your node here (key, vault) and write a signed join request for the API:
    POST it to /companies with the printed X-Sandbox-Signature header. Rows stay here."""
    from sandbox.data.byod import load_company_file
    from sandbox.identity.requests import join_request
    from sandbox.node.onboarding import prepare_node

    node_dir = node or load_settings().company_dir(company_id)
    try:
        table = load_company_file(data, manifest, test_data)
        key, filled = prepare_node(node_dir, company_id, table, seed)
    except DataValidationError as exc:
        data_problems(exc, "prepared")
    except (SandboxError, ValueError) as exc:
        fail(str(exc))
    body, signature = join_request(
        key, company_id, name or company_id, filled.industry, filled, tuple(purpose), valid_days
    )
    out.write_bytes(body)
    _looks_personal(filled.model_dump(mode="json"))
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
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
    test_data: Path | None = typer.Option(None, "--test-data", help=TEST_DATA_HELP),
) -> None:
    """Put another dataset into your node's vault and print the path of its filled-in
    manifest, the body of POST /companies/<id>/datasets. Rows stay here."""
    from sandbox.data.byod import load_company_file
    from sandbox.data.vault import VaultError, vault_path, write_vault
    from sandbox.node.home import NodeHome

    node_dir = node or load_settings().company_dir(company_id)
    if not NodeHome(node_dir).info_path.exists():
        fail(f"{node_dir} holds no company node; prepare it with `sandbox company join-request`")
    try:
        table = load_company_file(data, manifest, test_data)
        filled = write_vault(
            node_dir, table.frame, table.manifest, seed, table.test_rows, table.split_source
        )
    except DataValidationError as exc:
        data_problems(exc, "prepared")
    except (VaultError, ValueError) as exc:
        fail(str(exc))
    typer.echo(vault_path(node_dir, filled.name) / "manifest.json")


@consent_app.command("grant")
def consent_grant(
    company_id: str = typer.Argument(...),
    purpose: str = typer.Option(..., "--purpose"),
    dataset: str = typer.Option("census", "--dataset"),
    valid_days: int = typer.Option(365, "--valid-days", min=1),
) -> None:
    """Grant consent of one dataset to one purpose (recorded in the registry, the ledger and
    the company's own node record)."""
    settings = load_settings()
    try:
        consent = consent_service.grant_consent(
            governance(),
            company_id,
            dataset,
            purpose,
            timedelta(days=valid_days),
            node_dir=settings.company_dir(company_id),
        )
    except (SandboxError, ValueError) as exc:
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
    settings = load_settings()
    try:
        consent = consent_service.revoke_consent(
            governance(),
            company_id,
            consent_id,
            reason,
            node_dir=settings.company_dir(company_id),
        )
    except (SandboxError, ValueError) as exc:
        fail(str(exc))
    console.print(f"Consent {consent.id} revoked")


@consent_app.command("list")
def consent_list(company_id: str = typer.Argument(...)) -> None:
    """The company's consents and whether each is live (read as the company itself)."""
    from sandbox.utc import utcnow

    gov = governance()
    try:
        consents = company_service.company_consents(
            gov, acting(gov, company_id, "company"), company_id
        )
    except SandboxError as exc:
        fail(str(exc))
    table = Table("consent", "dataset", "purpose", "expires", "state")
    now = utcnow()
    for c in consents:
        state = "revoked" if c.revoked_at else ("expired" if c.expires_at <= now else "live")
        table.add_row(c.id, c.dataset_id, c.purpose, f"{c.expires_at:%Y-%m-%d}", state)
    console.print(table)


@company_app.command("list")
def company_list(
    as_: str = typer.Option("regulator", "--as", help="Who reads the registry (a regulator)"),
) -> None:
    """Companies in the registry with their datasets."""
    gov = governance()
    reader = acting(gov, as_, "regulator")
    try:
        rows = [
            (company, company_service.company_datasets(gov, reader, company.id))
            for company in company_service.list_companies(gov, reader)
        ]
    except SandboxError as exc:
        fail(str(exc))
    table = Table("company", "industry", "datasets", "joined")
    for company, datasets in rows:
        listed = ", ".join(f"{d.name} ({d.row_count} rows, {d.grade})" for d in datasets)
        table.add_row(
            company.id, company.industry, listed, company.joined_at.strftime("%Y-%m-%d %H:%M UTC")
        )
    console.print(table)


@company_app.command("budget")
def company_budget(
    company_id: str = typer.Argument(..., help="The company's id"),
    as_: str | None = typer.Option(None, "--as", help="Who reads (default: the company)"),
) -> None:
    """The privacy budget (epsilon) the company has spent and has left, per purpose: a job
    whose need is above what is left is refused at filing, approval and start."""
    from sandbox.services.budgets import company_budgets

    gov = governance()
    try:
        found = company_budgets(gov, acting(gov, as_ or company_id, "company"), company_id)
    except SandboxError as exc:
        fail(str(exc))
    if not found:
        console.print(f"{company_id} has spent no privacy budget yet")
        return
    tiers = list(found[0].caps)
    table = Table("purpose", "jobs", "epsilon spent", *(f"left in a {t}-tier job" for t in tiers))
    for budget in found:
        table.add_row(budget.purpose, str(budget.jobs), f"{budget.spent:.4f}",
                      *(f"{budget.left(t):.4f}" for t in tiers))  # fmt: skip
    console.print(table)


@company_app.command("register-dataset")
def company_register_dataset(
    company_id: str = typer.Argument(..., help="The company's id"),
    manifest: Path = typer.Option(
        ..., "--manifest", help="The filled-in manifest `prepare-dataset` printed the path of"
    ),
) -> None:
    """Register another dataset's manifest (its rows stay in the node's vault), as the
    company: decided and recorded like the API's POST /companies/<id>/datasets."""
    import json

    from sandbox.data.manifest import DatasetManifest

    gov = governance()
    try:
        filled = DatasetManifest.model_validate(json.loads(manifest.read_text(encoding="utf-8")))
        dataset = company_service.register_dataset(
            gov, company_id, filled, actor=acting(gov, company_id, "company")
        )
    except (SandboxError, ValueError, OSError) as exc:
        fail(str(exc))
    console.print(f"dataset {dataset.id} registered ({dataset.row_count} rows, {dataset.grade})")


@company_app.command("refusals")
def company_refusals(
    company_id: str = typer.Argument(..., help="The company's id"),
    node: Path | None = typer.Option(
        None, "--node", help="Your node folder (default: <SANDBOX_HOME>/companies/<id>)"
    ),
    deliver: bool = typer.Option(
        False, "--deliver", help="Hand the notices not yet in the ledger to the sandbox"
    ),
) -> None:
    """Every task your node refused (from its own log), and whether the sandbox's ledger has
    it. ``--deliver`` hands the missing ones over, signed, as the company (the API's
    POST /companies/<id>/refusals does the same from elsewhere)."""
    from sandbox.node import refusals
    from sandbox.services import nodes as node_service

    try:
        home = _own_node(company_id, node)
        found = refusals.notices(home)
        pending = {n.notice.notice_id for n in refusals.pending(home)}
        if deliver and pending:
            gov = governance()
            todo = [(n.text, n.signature) for n in found if n.notice.notice_id in pending]
            recorded = node_service.record_refusals(
                gov, company_id, todo, via="company", actor=acting(gov, company_id, "company")
            )
            refusals.mark_delivered(home, [r.id for r in recorded], "sandbox ledger")
            pending -= {r.id for r in recorded}
    except (SandboxError, OSError, ValueError) as exc:
        fail(str(exc))
    table = Table("time", "job", "task", "cause", "acknowledged", "reason")
    for item in found:
        n = item.notice
        table.add_row(
            n.time, n.job or "-", n.task, n.cause,
            "no" if n.notice_id in pending else "yes", n.reason,
        )  # fmt: skip
    console.print(table)
    console.print(f"{len(found)} refusals in the node's log; {len(pending)} not delivered")


@company_app.command("witness")
def company_witness(
    company_id: str = typer.Argument(..., help="The company's id"),
    node: Path | None = typer.Option(
        None, "--node", help="Your node folder (default: <SANDBOX_HOME>/companies/<id>)"
    ),
) -> None:
    """What your node, as a witness of the sandbox's ledger, last cosigned, and every alarm
    it raised (a history shown to it that does not extend what it cosigned; both signed notes
    are kept in the node folder). Exits 1 when there is an alarm."""
    from sandbox.node.witness import node_witness

    try:
        home = _own_node(company_id, node)
        witness = node_witness(home)
        held = witness.latest() if witness is not None else None
        alarms = witness.alarms() if witness is not None else []
    except (SandboxError, OSError, ValueError) as exc:
        fail(str(exc))
    if held is None:
        console.print("your node has cosigned no checkpoint of the ledger yet")
    else:
        console.print(f"last cosigned: {held[0].origin} at size {held[0].size}")
    for alarm in alarms:
        err.print(f"[bold red]ALARM[/] {alarm['time']}: {alarm['problem']}")
    if alarms:
        err.print(f"both signed notes of each alarm are in {home.folder / 'witness' / 'alarms'}")
        raise typer.Exit(1)


def _own_node(company_id: str, node: Path | None) -> NodeHome:
    """The company's node folder (``--node``, or its place in the sandbox home), refusing a
    folder that is another company's."""
    from sandbox.node.home import NodeHome

    home = NodeHome(node or load_settings().company_dir(company_id))
    if home.company_id != company_id:
        fail(f"{home.folder} is {home.company_id}'s node, not {company_id}'s")
    return home
