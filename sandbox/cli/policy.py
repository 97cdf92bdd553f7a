"""``sandbox policy``: check the policy set, explain a decision, run the policy test cases,
sign a policy set as the regulator."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from policies.cases import CASES_DIR, case_files, load_cases, load_request, run_cases
from policies.engine import MemoryRecorder, PolicyDecisionPoint
from policies.facts import FactsError
from policies.policyset import DEFAULT_POLICY_DIR, LoadedPolicySet, PolicySetError

policy_app = typer.Typer(
    help="The policy set: check it, explain a decision, run its test cases, sign it.",
    no_args_is_help=True,
)
console = Console()

DirOption = typer.Option(
    DEFAULT_POLICY_DIR, "--dir", help="Folder of the policy set.", file_okay=False, exists=True
)


def _load(policy_dir: Path) -> LoadedPolicySet:
    try:
        return LoadedPolicySet.from_dir(policy_dir)
    except PolicySetError as exc:
        console.print(f"[red]The policy set in {policy_dir} is not valid:[/red]")
        for problem in exc.problems:
            console.print(f"  - {problem}", markup=False)
        raise typer.Exit(1) from None


@policy_app.command()
def check(policy_dir: Path = DirOption) -> None:
    """Parse the policy set and validate it against the schema; list its policies."""
    ps = _load(policy_dir)
    table = Table(title=f"{len(ps.policies)} policies, all valid against the schema")
    table.add_column("id", style="cyan", no_wrap=True)
    table.add_column("effect")
    table.add_column("file")
    table.add_column("reason")
    for p in ps.policies:
        effect = "[green]permit[/green]" if p.effect == "permit" else "[red]forbid[/red]"
        table.add_row(p.id, effect, p.file, p.reason)
    console.print(table)
    tiers = Table(title="risk tiers (tiers.toml)")
    for column in ("tier", "min participants", "DP epsilon cap", "max gap", "max calib. error"):
        tiers.add_column(column)
    for t in ps.tiers.tiers.values():
        tiers.add_row(
            t.name,
            str(t.min_participants),
            str(t.dp_epsilon_cap),
            str(t.release_max_worst_company_gap),
            str(t.release_max_calibration_error),
        )
    console.print(tiers)
    console.print(f"policy-set hash: [bold]{ps.hash}[/bold]", soft_wrap=True)


@policy_app.command()
def explain(
    request: Path = typer.Argument(..., help="Request file (JSON).", exists=True, dir_okay=False),
    policy_dir: Path = DirOption,
    as_json: bool = typer.Option(False, "--json", help="Print the decision record as JSON."),
) -> None:
    """Decide one request from a JSON file and say why.

    The file holds principal, action, resource, context and entities as facts; see
    policies/cases.py for the format.
    """
    ps = _load(policy_dir)
    try:
        req = load_request(request)
    except (FactsError, json.JSONDecodeError) as exc:
        console.print(f"[red]{request} is not a valid request:[/red] {exc}", markup=True)
        raise typer.Exit(2) from None
    decision = req.decide(PolicyDecisionPoint(ps, MemoryRecorder()))
    if as_json:
        print(json.dumps(decision.to_record(), indent=2))
        return
    verdict = "[bold green]ALLOW[/bold green]" if decision.allowed else "[bold red]DENY[/bold red]"
    console.print(f"{verdict}  {decision.principal} {decision.action} {decision.resource}")
    if decision.policies:
        console.print("decided by:")
        for policy_id, reason in zip(decision.policies, decision.reasons, strict=True):
            console.print(f"  [cyan]{policy_id}[/cyan]: {reason}")
    else:
        for reason in decision.reasons:
            console.print(f"  {reason}", markup=False)
    for error in decision.errors:
        console.print(f"  [red]error:[/red] {error}")
    console.print(
        f"decision {decision.decision_id}, policy set {decision.policy_set_hash[:16]}…, "
        f"context {decision.context_digest[:16]}…",
        style="dim",
    )


@policy_app.command("test")
def run_tests(
    policy_dir: Path = DirOption,
    cases_dir: Path = typer.Option(
        CASES_DIR, "--cases", help="Folder of the case files.", file_okay=False, exists=True
    ),
) -> None:
    """Run the policy test cases; exit 1 if any fails."""
    ps = _load(policy_dir)
    files = case_files(cases_dir)
    if not files:
        console.print(f"[red]no case files in {cases_dir}[/red]")
        raise typer.Exit(1)
    table = Table(title=f"policy test cases ({cases_dir})")
    table.add_column("")
    table.add_column("file")
    table.add_column("case")
    table.add_column("expected", overflow="fold")
    table.add_column("got", overflow="fold")
    failed = total = 0
    for path in files:
        try:
            cases = load_cases(path)
        except (FactsError, json.JSONDecodeError, KeyError) as exc:
            console.print(f"[red]{path.name} cannot be read:[/red] {exc}")
            failed += 1
            continue
        for result in run_cases(ps, cases):
            total += 1
            case, d = result.case, result.decision
            expected = ("allow" if case.expect_allowed else "deny") + _ids(case.expect_policies)
            got = ("allow" if d.allowed else "deny") + _ids(d.policies)
            if d.errors:
                got += "\nerrors: " + "; ".join(d.errors)
            mark = "[green]✓[/green]" if result.passed else "[red]✗[/red]"
            failed += not result.passed
            table.add_row(mark, path.name, case.name, expected, got)
    console.print(table)
    summary = f"{total - failed} passed, {failed} failed"
    console.print(f"[{'red' if failed else 'green'}]{summary}[/]")
    if failed:
        raise typer.Exit(1)


def _ids(ids: object) -> str:
    names = sorted(ids)  # type: ignore[call-overload]
    return ("\n" + "\n".join(names)) if names else ""


@policy_app.command()
def sign(
    policy_dir: Path = DirOption,
    home: Path | None = typer.Option(None, help="Sandbox home (default: SANDBOX_HOME)."),
) -> None:
    """Sign the policy set with this installation's regulator key and file the signature,
    so that the set becomes active at the next start."""
    from dataclasses import replace

    from sandbox.cli.render import fail
    from sandbox.config import load_settings
    from sandbox.errors import SandboxError
    from sandbox.services.policy_sets import sign_and_file

    ps = _load(policy_dir)
    settings = load_settings()
    try:
        signature, path = sign_and_file(replace(settings, home=home or settings.home), ps.hash)
    except SandboxError as exc:
        fail(str(exc))
    console.print(f"policy-set hash: {ps.hash}", soft_wrap=True)
    console.print(f"signature: {signature}", soft_wrap=True)
    console.print(f"filed in {path}", style="dim", soft_wrap=True)
