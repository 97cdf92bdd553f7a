"""``sandbox company voucher|vouchers`` and ``sandbox job settle|settlement|contest|resolve``:
compute vouchers and a completed job's settlement (:mod:`sandbox.services.settlements`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from sandbox.cli.company import company_app
from sandbox.cli.job import job_app
from sandbox.cli.render import acting, console, fail, governance
from sandbox.errors import SandboxError
from sandbox.services import settlements as settlement_service


def money(cents: int, currency: str = "") -> str:
    return f"{cents / 100:,.2f}" + (f" {currency}" if currency else "")


@company_app.command("voucher")
def company_voucher(
    company_id: str = typer.Argument(..., help="The company to receive it"),
    amount: str = typer.Option(..., "--amount", help="In the settlement currency, e.g. 20.00"),
    purpose: str = typer.Option(..., "--purpose", help="Why (e.g. first-time participant)"),
    valid_days: int = typer.Option(365, "--valid-days", min=1, max=3650),
    as_: str = typer.Option("operator", "--as", help="The operator or a regulator"),
) -> None:
    """Issue a compute voucher under the written terms (tiers.toml [settlement]): to a small
    firm or a first-time participant, up to the terms' maximum (decided and recorded)."""
    gov = governance()
    try:
        voucher = settlement_service.issue_voucher(
            gov, acting(gov, as_, "operator"), company_id, amount, valid_days, purpose
        )
    except SandboxError as exc:
        fail(str(exc))
    console.print(f"voucher {voucher.id}: {money(voucher.amount, voucher.currency)} for "
                  f"{company_id}, valid until {voucher.valid_until:%Y-%m-%d}")  # fmt: skip


@company_app.command("vouchers")
def company_vouchers(
    company_id: str = typer.Argument(...),
    as_: str | None = typer.Option(None, "--as", help="Who reads (default: the company)"),
) -> None:
    """A company's vouchers and what is left of each."""
    gov = governance()
    try:
        found = settlement_service.vouchers(gov, acting(gov, as_ or company_id, "company"),
                                            company_id)  # fmt: skip
    except SandboxError as exc:
        fail(str(exc))
    table = Table("voucher", "amount", "used", "left", "valid until", "purpose")
    for balance in found:
        v = balance.voucher
        table.add_row(v.id, money(v.amount, v.currency), money(balance.used), money(balance.left),
                      f"{v.valid_until:%Y-%m-%d}", v.purpose)  # fmt: skip
    console.print(table)


@job_app.command("settle")
def job_settle(
    job_id: str = typer.Argument(...),
    value: str = typer.Option(..., "--value", help="The job's value to distribute, e.g. 10000"),
    as_: str = typer.Option("engineer", "--as", help="The filing engineer or the operator"),
) -> None:
    """Draw up a completed job's settlement statement, signed with the operator's key."""
    gov = governance()
    try:
        actor = acting(gov, as_, "engineer")
        settlement_service.settle(gov, actor, job_id, value)
        shown = settlement_service.settlement_of(gov, actor, job_id)
    except SandboxError as exc:
        fail(str(exc))
    print_statement(shown.statement)


@job_app.command("settlement")
def job_settlement(
    job_id: str = typer.Argument(...),
    as_: str = typer.Option("regulator", "--as", help="Who reads (a company sees its own line)"),
    csv_file: Path | None = typer.Option(None, "--csv", help="Also write the table as CSV"),
) -> None:
    """A job's settlement statement and its contests."""
    gov = governance()
    try:
        shown = settlement_service.settlement_of(gov, acting(gov, as_, "regulator"), job_id)
    except SandboxError as exc:
        fail(str(exc))
    print_statement(shown.statement)
    console.print(f"statement sha256 {shown.statement_sha256} (revision {shown.settlement.revision}"
                  f", signed by the operator's key)")  # fmt: skip
    for d in shown.disputes:
        console.print(f"contest {d.id} by {d.company_id} (revision {d.revision}): {d.status}"
                      + (f" — {d.resolution}" if d.resolution else ""))  # fmt: skip
    if csv_file is not None:
        csv_file.write_text(settlement_service.statement_csv(shown.statement), encoding="utf-8")
        console.print(f"written to {csv_file}")


def print_statement(statement: dict[str, Any]) -> None:
    currency = statement["currency"]
    console.print(f"settlement of job {statement['job']} (revision {statement['revision']}): "
                  f"value {money(statement['value'], currency)}, shares by "
                  f"{statement['method']}; prices per CPU-hour {statement['prices']['cpu_hour']}, "
                  f"per GB {statement['prices']['gigabyte']}, per task "
                  f"{statement['prices']['task']} {currency}")  # fmt: skip
    table = Table("company", "share", "amount", "CPU s", "tasks", "compute", "vouchers", "billed",
                  "net")  # fmt: skip
    for row in statement["companies"]:
        table.add_row(row["company"], f"{row['share']:.4f}", money(row["amount"]),
                      f"{row['cpu_seconds']:.1f}", str(row["metered_tasks"]),
                      money(row["compute_cost"]),
                      money(row["vouchers"]), money(row["billed"]), money(row["net"]))  # fmt: skip
    if "others" in statement:
        others = statement["others"]
        table.add_row(f"{others['companies']} other companies", "", money(others["amount"]), "", "",
                      money(others["compute_cost"]), money(others["vouchers"]), "",
                      money(others["net"]))  # fmt: skip
    console.print(table)
    coordinator = statement.get("coordinator")
    if coordinator:
        console.print(f"The coordinator's own side: {coordinator['cpu_seconds']:.1f} CPU seconds "
                      f"over {coordinator['wall_seconds']:.1f} s (the operator's, not billed)")  # fmt: skip


@job_app.command("contest")
def job_contest(
    job_id: str = typer.Argument(...),
    as_: str = typer.Option(..., "--as", help="The company contesting"),
    reason: str = typer.Option(..., "--reason", help="Why (kept with the contest)"),
) -> None:
    """A company contests a job's settlement statement."""
    gov = governance()
    try:
        dispute = settlement_service.contest(gov, acting(gov, as_, "company"), job_id, reason)
    except SandboxError as exc:
        fail(str(exc))
    console.print(f"contest {dispute.id} recorded (revision {dispute.revision})")


@job_app.command("resolve")
def job_resolve(
    job_id: str = typer.Argument(...),
    dispute_id: str = typer.Argument(..., help="The contest (dsp-…)"),
    outcome: str = typer.Option(..., "--outcome", help="upheld or rejected"),
    note: str = typer.Option(..., "--note", help="The resolution (kept with the contest)"),
    as_: str = typer.Option("operator", "--as", help="The operator or a regulator"),
) -> None:
    """Resolve a contest of a settlement: upheld (a new revision may follow) or rejected."""
    gov = governance()
    try:
        done = settlement_service.resolve(gov, acting(gov, as_, "operator"), job_id, dispute_id,
                                          outcome, note)  # fmt: skip
    except SandboxError as exc:
        fail(str(exc))
    console.print(f"contest {done.id}: {done.status}")
