"""``sandbox company applications|admit|refuse``: the review of companies' applications to
join, by the operator (and a regulator where the data needs one)."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from sandbox.cli.company import company_app
from sandbox.cli.render import acting, console, fail, governance
from sandbox.data.manifest import DatasetManifest, personal_looking_columns
from sandbox.errors import SandboxError


@company_app.command("applications")
def company_applications(
    status: str = typer.Option("pending", "--status", help="pending, admitted or refused"),
    as_: str = typer.Option("operator", "--as", help="Who reviews (the operator, a regulator)"),
) -> None:
    """Companies' applications to join (``POST /companies``), oldest first."""
    from sandbox.services import applications as application_service

    gov = governance()
    try:
        found = application_service.list_applications(gov, acting(gov, as_, "operator"), status)
    except SandboxError as exc:
        fail(str(exc))
    table = Table("application", "company", "industry", "dataset", "personal data",
                  "regulator", "submitted")  # fmt: skip
    for a in found:
        table.add_row(a.id, a.company_id, a.industry, *_declared(a.manifest),
                      a.regulator_admitted_by or "-",
                      a.submitted_at.strftime("%Y-%m-%d %H:%M UTC"))  # fmt: skip
    console.print(table)


def _declared(raw: dict[str, Any] | None) -> tuple[str, str]:
    """The dataset and its personal-data declaration, with the columns that look personal
    where it declares none."""
    if not raw:
        return "-", "-"
    manifest = DatasetManifest.model_validate(raw)
    personal = "yes" if manifest.personal_data else "no"
    flagged = [] if manifest.personal_data else personal_looking_columns(manifest)
    if flagged:
        personal += f" [red](but {', '.join(flagged)} look personal)[/]"
    return f"{manifest.name} ({manifest.grade})", personal


@company_app.command("admit")
def company_admit(
    application_id: str = typer.Argument(..., help="The application's id (app-…)"),
    industry: str = typer.Option(
        ..., "--industry", help="The industry you confirm (as the application declares it)"
    ),
    personal_data: bool = typer.Option(
        ...,
        "--personal-data/--no-personal-data",
        help="Whether you confirm its data holds personal information, as declared",
    ),
    as_: str = typer.Option("operator", "--as", help="The operator, or a regulator"),
) -> None:
    """Admit an application, confirming what it declares (its industry sets its jobs' risk
    tier; personal data makes DP compulsory): a regulator's admission is recorded (where the
    data needs one, it comes first); the operator's admits the company with its key,
    manifest and consents."""
    from sandbox.services import applications as application_service

    gov = governance()
    confirmed = application_service.Confirmation(industry, personal_data)
    try:
        done = application_service.admit(
            gov, acting(gov, as_, "operator"), application_id, confirmed
        )
    except SandboxError as exc:
        fail(str(exc))
    if done.status == "admitted":
        console.print(f"[green]{done.company_id} admitted[/] ({done.id})")
    else:
        console.print(f"{done.company_id}: admitted by {done.regulator_admitted_by}; the "
                      "operator admits it next")  # fmt: skip


@company_app.command("refuse")
def company_refuse(
    application_id: str = typer.Argument(..., help="The application's id (app-…)"),
    reason: str = typer.Option(..., "--reason", help="Why (kept with the application)"),
    as_: str = typer.Option("operator", "--as", help="The operator, or a regulator"),
) -> None:
    """Refuse an application, with the reason."""
    from sandbox.services import applications as application_service

    gov = governance()
    try:
        done = application_service.refuse(gov, acting(gov, as_, "operator"), application_id,
                                          reason)  # fmt: skip
    except SandboxError as exc:
        fail(str(exc))
    console.print(f"{done.company_id}: application {done.id} refused")
