"""``sandbox audit``: verify the ledger, prove entries, export and verify bundles.

Exit codes: 0 success, 1 verification failed, 2 the command could not run (bad input, no such
entry, no checkpoint, unreadable key or bundle).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sandbox.cli import pins as pin_commands
from sandbox.cli import witnessing as witness_commands
from sandbox.cli.render import acting, governance
from sandbox.config import load_settings
from sandbox.errors import Conflict, Forbidden, SandboxError
from sandbox.governance import Governance
from sandbox.ledger.bundle import verify_bundle
from sandbox.ledger.checkpoint import load_public_key, verify_checkpoint
from sandbox.ledger.errors import BundleError, CheckpointError, LedgerError, LedgerIntegrityError
from sandbox.ledger.log import Ledger
from sandbox.ledger.merkle import leaf_hash
from sandbox.ledger.verify import VerificationReport
from sandbox.ledger.witness import WitnessKey
from sandbox.protocol.job_receipts import JobReceipts, check_job_receipts
from sandbox.protocol.receipts import ReceiptError
from sandbox.services import audit as audit_service
from sandbox.utc import as_utc

audit_app = typer.Typer(
    name="audit",
    help="Verify the audit ledger, prove entries, export and verify evidence bundles.",
    no_args_is_help=True,
)

# Soft wrap: paths, hashes and problems stay on one line, whole, to be copied or grepped.
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

EXIT_FAILED = 1
EXIT_ERROR = 2

KeyOption = Annotated[
    str | None,
    typer.Option(
        "--key",
        help="the operator's public key: a file, or base64 of the raw 32 bytes, or a "
        "signed-note verifier key",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    errors.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _read_key(value: str) -> str:
    path = Path(value).expanduser()
    try:
        if path.is_file():
            return path.read_text(encoding="utf-8").strip()
    except OSError as exc:  # e.g. a name too long to be a path: it is the key itself
        if path.exists():
            _fail(f"cannot read the key file {path}: {exc.strerror}")
    return value


def _public_key(value: str) -> str:
    key_text = _read_key(value)
    try:
        load_public_key(key_text)
    except CheckpointError as exc:
        _fail(f"unusable public key: {exc}")
    return key_text


@contextmanager
def _progress(description: str, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=errors, transient=True) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


def _show_report(report: VerificationReport, what: str, as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(asdict(report)))
    elif report.ok:
        console.print(
            f"[bold green]OK[/] {what}: {report.size} entries, {report.checkpoints} signed "
            f"checkpoint(s), attested up to size {report.attested_size}"
        )
        if report.attested_size < report.size:
            console.print(
                f"[yellow]note:[/] entries {report.attested_size}..{report.size - 1} are not "
                "covered by a signed checkpoint yet (run `sandbox audit checkpoint`)"
            )
    else:
        console.print(f"[bold red]FAILED[/] {what}: {report.size} entries")
        if report.first_bad_index is not None:
            console.print(f"[bold red]first bad index: {report.first_bad_index}[/]")
        for problem in report.problems:
            console.print(f"  - {problem}", markup=False, highlight=False)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


AsOption = Annotated[
    str,
    typer.Option("--as", help="who reads the ledger: a registered principal (a regulator)"),
]


def _reader(as_: str) -> tuple[Governance, Any]:
    """The installation's governance and who reads: every read of the ledger is decided by
    the policy and recorded, from this command as from the API."""
    try:
        gov = governance()
        return gov, acting(gov, as_, "regulator")
    except (LedgerError, ValueError) as exc:
        _fail(str(exc))


PinOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--pin",
        help="a signed checkpoint note you kept (a file; repeat for more): the log must extend it",
    ),
]


def _pins(files: list[Path] | None) -> list[tuple[str, str]]:
    pins = []
    for path in files or []:
        try:
            pins.append((f"pinned note {path}", path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            _fail(f"cannot read the pinned note {path}: {exc}")
    return pins


@audit_app.command()
def verify(key: KeyOption = None, pin: PinOption = None, as_json: JsonOption = False) -> None:
    """Recompute the whole ledger from its database and check every hash and signature
    against the operator's public key (``--key``; by default the installation's own).

    Names the first bad index when anything was changed, removed, reordered or inserted. An
    outsider's check, like ``verify-bundle``: it trusts nothing of the sandbox but the key,
    writes nothing (so it works on a damaged ledger) and needs only read access to the
    database; the API's ``POST /audit/verify`` is the governed way to ask for it.
    """
    settings = load_settings()
    try:
        ledger = Ledger.open(settings)
    except (LedgerError, ValueError) as exc:
        _fail(str(exc))
    public = _public_key(key) if key is not None else ledger.public_key_b64
    pins = _pins(pin)
    with _progress("verifying entries", not as_json) as progress:
        report = ledger.verify(progress, pins, public)
    _show_report(report, f"ledger {settings.ledger_origin}", as_json)


@audit_app.command()
def checkpoint(as_json: JsonOption = False, as_: AsOption = "regulator") -> None:
    """Sign a checkpoint of the current size (if newer than the last) and print it."""
    gov, reader = _reader(as_)
    try:
        signed = audit_service.audit_checkpoint(gov, reader)
    except LedgerIntegrityError as exc:
        _fail(f"refusing to sign: {exc}", EXIT_FAILED)
    except Forbidden as exc:
        if exc.unrecorded:
            _fail(
                f"refusing to sign: the ledger cannot record, so nothing is decided ({exc}); "
                "check it with `sandbox audit verify`",
                EXIT_FAILED,
            )
        _fail(str(exc))
    except (LedgerError, SandboxError) as exc:
        _fail(str(exc))
    if as_json:
        console.print_json(
            json.dumps({"size": signed.size, "root_hex": signed.root.hex(), "note": signed.note})
        )
    else:
        typer.echo(signed.note, nl=False)


@audit_app.command()
def proof(
    index: Annotated[int, typer.Argument(help="the entry's index (from 0)")],
    as_json: JsonOption = False,
    as_: AsOption = "regulator",
) -> None:
    """Prove that entry INDEX is in the log, against the latest signed checkpoint.

    Signs a new checkpoint first if the latest one does not cover the entry yet.
    """
    gov, reader = _reader(as_)
    ledger = gov.ledger
    try:
        entry, inclusion, latest = audit_service.audit_entry(gov, reader, index)
    except (LedgerIntegrityError, Conflict) as exc:
        _fail(str(exc), EXIT_FAILED)
    except (LedgerError, SandboxError) as exc:
        _fail(str(exc))
    head = verify_checkpoint(latest.note, ledger.public_key, origin=ledger.origin)
    leaf_matches = leaf_hash(entry.entry) == inclusion.leaf_hash
    verified = leaf_matches and inclusion.verify(head.root)
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "index": index,
                    "tree_size": inclusion.tree_size,
                    "leaf_hash": inclusion.leaf_hash.hex(),
                    "root": head.root.hex(),
                    "proof": [element.hex() for element in inclusion.hashes],
                    "checkpoint": latest.note,
                    "entry": entry.entry.decode("utf-8"),
                    "verified": verified,
                }
            )
        )
    else:
        # Plain lines, never wrapped or shortened: these values are meant to be copied.
        lines = [
            f"entry {index}: {entry.entry.decode('utf-8')}",
            f"leaf hash: {inclusion.leaf_hash.hex()}",
            f"tree size: {inclusion.tree_size}",
            f"signed root: {head.root.hex()}",
            *(f"proof[{level}]: {element.hex()}" for level, element in enumerate(inclusion.hashes)),
            "checkpoint:",
        ]
        console.print("\n".join(lines), markup=False, highlight=False)
        typer.echo(latest.note, nl=False)
        if verified:
            console.print(
                f"[bold green]verified[/]: entry {index} is in the signed tree of "
                f"{inclusion.tree_size} entries"
            )
    if not verified:
        console.print(
            f"[bold red]NOT verified[/]: entry {index} does not prove into the signed root"
        )
        raise typer.Exit(EXIT_FAILED)


@audit_app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="a new or empty folder for the bundle")],
    as_: AsOption = "regulator",
) -> None:
    """Sign a checkpoint and export the ledger as a self-describing evidence bundle."""
    gov, reader = _reader(as_)
    try:
        with _progress("exporting entries", True) as progress:
            manifest_path = audit_service.audit_export(gov, reader, out, progress)
    except LedgerIntegrityError as exc:
        _fail(f"refusing to sign a checkpoint for the export: {exc}", EXIT_FAILED)
    except (LedgerError, BundleError, OSError, SandboxError) as exc:
        _fail(str(exc))
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    console.print(f"[bold green]exported[/] {manifest['tree_size']} entries to {out}")
    console.print(f"root {manifest['root_hex']}")
    console.print(
        f"verify with: sandbox audit verify-bundle {out} --key {manifest['public_key']['base64']}"
    )


@audit_app.command("verify-bundle")
def verify_bundle_command(
    bundle: Annotated[Path, typer.Argument(help="the bundle folder")],
    key: Annotated[str, typer.Option("--key", help=KeyOption.__metadata__[0].help)],
    pin: PinOption = None,
    witness_key: Annotated[
        list[str] | None,
        typer.Option("--witness-key", help="a witness you trust, NAME=BASE64KEY (repeatable)"),
    ] = None,
    quorum: Annotated[
        int | None,
        typer.Option(help="cosignatures the latest checkpoint needs (default: every witness)"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Verify an exported bundle with nothing but its files and the operator's public key;
    with ``--pin``, also that it extends every signed checkpoint you kept; with
    ``--witness-key``, that its latest checkpoint carries a quorum of their cosignatures."""
    if not bundle.is_dir():
        _fail(f"{bundle} is not a folder")
    pins = _pins(pin)
    try:
        witnesses = [WitnessKey.parse(text) for text in witness_key or []]
    except (ValueError, LedgerError) as exc:
        _fail(str(exc))
    needed = len(witnesses) if quorum is None else quorum
    with _progress("verifying bundle", not as_json) as progress:
        report = verify_bundle(bundle, _public_key(key), progress, pins, witnesses, needed)
    _show_report(report, f"bundle {bundle}", as_json)


@audit_app.command("entries")
def list_entries(
    after: Annotated[int, typer.Option(help="show entries after this index")] = -1,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    company: Annotated[
        str | None, typer.Option(help="actor organisation, owner or participant")
    ] = None,
    principal: Annotated[str | None, typer.Option()] = None,
    job: Annotated[str | None, typer.Option("--job")] = None,
    action: Annotated[str | None, typer.Option()] = None,
    since: Annotated[datetime | None, typer.Option(help="UTC, inclusive")] = None,
    until: Annotated[datetime | None, typer.Option(help="UTC, exclusive")] = None,
    as_json: JsonOption = False,
    as_: AsOption = "regulator",
) -> None:
    """List entries in index order, filtered (as stored: a changed entry is shown with its
    problem)."""
    gov, reader = _reader(as_)
    try:
        found = audit_service.audit_entries(
            gov,
            reader,
            after_index=after,
            limit=limit,
            company=company,
            principal=principal,
            job=job,
            action=action,
            since=as_utc(since) if since else None,
            until=as_utc(until) if until else None,
        )
    except SandboxError as exc:
        _fail(str(exc))
    if as_json:
        console.print_json(
            json.dumps([json.loads(item.entry) | {"index": item.index} for item in found])
        )
        return
    table = Table()
    for column in ("index", "time (UTC)", "action", "principal", "owner", "decision", "job"):
        table.add_column(column, no_wrap=column != "time (UTC)")
    for item in found:
        record = item.record
        if record is None:
            table.add_row(str(item.index), "", f"[red]{item.problem}[/]", "", "", "", "")
            continue
        decision = (
            "" if record.decision is None else ("allow" if record.decision.allowed else "deny")
        )
        owner = record.resource.owner if record.resource else None
        table.add_row(
            str(item.index),
            record.time.strftime("%Y-%m-%d %H:%M:%S"),
            record.action,
            record.actor.principal,
            owner or "",
            decision,
            record.job_id or "",
        )
    console.print(table)


@audit_app.command("receipts")
def receipts_export(
    job_id: Annotated[str, typer.Argument(help="the job")],
    out: Annotated[Path, typer.Option("--out", help="the JSON file to write")],
    as_: AsOption = "regulator",
) -> None:
    """Export a job's receipts with its signed warrant and the companies' public keys, to
    check offline with `sandbox audit check-receipts`."""
    gov, reader = _reader(as_)
    try:
        document = audit_service.job_receipts_evidence(gov, reader, job_id)
    except SandboxError as exc:
        _fail(str(exc))
    try:
        out.write_text(document.model_dump_json(indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot write {out}: {exc.strerror}")
    console.print(f"[bold green]exported[/] {len(document.receipts)} receipts of {job_id} to {out}")


@audit_app.command("check-receipts")
def check_receipts(
    evidence: Annotated[Path, typer.Argument(help="a file from `sandbox audit receipts`")],
    operator_key: Annotated[
        str, typer.Option("--operator-key", help="the operator's public key, or a file holding it")
    ],
    regulator_key: Annotated[
        str,
        typer.Option("--regulator-key", help="the installation's regulator public key, or a file"),
    ],
    as_json: JsonOption = False,
) -> None:
    """Check a job's receipts offline, with public keys only: the warrant's signatures, each
    receipt's company signature, and that every receipt stays inside the warrant."""
    try:
        document = JobReceipts.parse(evidence.read_text(encoding="utf-8"))
    except OSError as exc:
        _fail(f"cannot read {evidence}: {exc.strerror}")
    except ReceiptError as exc:
        _fail(str(exc))
    result = check_job_receipts(document, _public_key(operator_key), _public_key(regulator_key))
    if as_json:
        console.print_json(json.dumps(asdict(result) | {"ok": result.ok}))
    elif result.ok:
        console.print(
            f"[bold green]OK[/]: {result.receipts} receipts of {result.job} hold against its "
            f"warrant, from {len(result.key_ids)} companies"
        )
        for company, key_id in sorted(result.key_ids.items()):
            spent = result.epsilon_job.get(company)
            tail = f", epsilon {spent:.4f} for the job" if spent is not None else ""
            console.print(f"  {company}: key {key_id}{tail}")
        console.print("compare the key ids with the ledger's company.joined entries")
    else:
        for problem in result.problems:
            console.print(f"[bold red]problem[/]: {problem}")
    if not result.ok:
        raise typer.Exit(EXIT_FAILED)


audit_app.command("pin")(pin_commands.pin)
audit_app.command("monitor")(pin_commands.monitor)
audit_app.command("witness")(witness_commands.witness)
audit_app.command("witnesses")(witness_commands.witnesses)
