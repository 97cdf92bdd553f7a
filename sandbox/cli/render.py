"""What every command shares: the consoles, failing with a message, progress bars, number
formats, and who the command acts as."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sandbox.config import load_settings
from sandbox.data.validation import DataValidationError
from sandbox.errors import NotFound
from sandbox.governance import Governance, get_governance
from sandbox.services import principals as principal_service
from sandbox.vocabulary import INSTALLATION_ENGINEER, INSTALLATION_REGULATOR, OPERATOR_ID

# Piped output (logs, CI) gets a wide page so that tables keep their columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def governance() -> Governance:
    """The governance of the installation named by the environment (``SANDBOX_HOME``,
    ``SANDBOX_DATABASE_URL``)."""
    return get_governance(load_settings())


def acting(gov: Governance, principal_id: str, role: str) -> Any:
    """Who a command acts as (its ``--as``): a company in the registry, a registered
    principal with its role, or the installation's own principals, each as the default of
    its role (``operator``; ``regulator``, whose key is the sandbox's regulator key;
    ``engineer``). Anyone else is refused: the ledger names only principals that exist."""
    for registered in ("company", "engineer", "regulator", "operator"):
        try:
            return principal_service.resolve(gov, registered, principal_id).facts
        except NotFound:
            continue
    if principal_id == OPERATOR_ID:
        return principal_service.operator(gov)
    if principal_id in (INSTALLATION_REGULATOR, INSTALLATION_ENGINEER) and principal_id == role:
        return principal_service.acting_as(gov, role, principal_id)
    fail(
        f"--as {principal_id!r}: no registered principal or company has this id (register it "
        f"with `sandbox principal add`; this command acts as a {role} by default)"
    )


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
