"""``sandbox audit pin`` and ``sandbox audit monitor``: keep the log's signed checkpoints in a
file of your own and check every new one against them (:mod:`sandbox.ledger.pins`).

The checkpoint and the consistency proofs come from this installation (a governed read, as
``--as``) or, with ``--api``, from a sandbox's API with a token: the check itself trusts
only the operator's public key.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sandbox.cli.render import acting, governance
from sandbox.errors import SandboxError
from sandbox.ledger.entries import ConsistencyProof
from sandbox.ledger.errors import LedgerError
from sandbox.ledger.pins import PinCheck, PinError, check_new_checkpoint, read_pins, record
from sandbox.services import audit as audit_service

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)
API_TIMEOUT_S = 30.0
MAX_MONITOR_CHECKS = 100_000

Fetch = tuple[str, str, str, Callable[[int, int], Sequence[bytes]]]
"""(origin, public key, signed note, consistency proof source)."""

PinFileOption = Annotated[
    Path, typer.Option("--file", help="the pin file (created at the first check)")
]
KeyOption = Annotated[
    str | None,
    typer.Option("--key", help="the operator's public key (base64); by default the log's own"),
]
ApiOption = Annotated[
    str | None, typer.Option("--api", help="a sandbox API's URL, e.g. https://sandbox.example")
]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="a token for --api (a regulator's)")
]
AsOption = Annotated[str, typer.Option("--as", help="who reads, on this installation")]


def _from_installation(as_: str) -> Fetch:
    gov = governance()
    reader = acting(gov, as_, "regulator")
    signed = audit_service.audit_checkpoint(gov, reader)

    def proof(old: int, new: int) -> Sequence[bytes]:
        found: ConsistencyProof = audit_service.audit_consistency(gov, reader, old, new)
        return found.hashes

    return gov.ledger.origin, gov.ledger.public_key_b64, signed.note, proof


def api_call(api: str, token: str | None, path: str, body: object = None) -> dict[str, object]:
    """GET (or with ``body``, POST as JSON) a sandbox API path, with a token unless ``None``;
    its JSON object answer."""
    if not api.startswith(("https://", "http://127.0.0.1", "http://localhost", "http://[::1]")):
        raise ValueError("--api must be https:// (or http:// on loopback)")
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode("utf-8")
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(api.rstrip("/") + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=API_TIMEOUT_S) as answer:
            document = json.load(answer)
    except urllib.error.HTTPError as exc:
        detail = exc.read(2000).decode("utf-8", "replace")
        raise ValueError(f"{path}: the API answered {exc.code}: {detail}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path} did not answer a JSON object")
    return document


def _from_api(api: str, token: str) -> Fetch:
    head = api_call(api, token, "/audit/checkpoint")

    def proof(old: int, new: int) -> Sequence[bytes]:
        query = urllib.parse.urlencode({"old_size": old, "new_size": new})
        found = api_call(api, token, f"/audit/consistency?{query}")
        return [bytes.fromhex(str(h)) for h in found["proof"]]  # type: ignore[attr-defined]

    return str(head["origin"]), str(head["public_key"]), str(head["note"]), proof


def _check_once(file: Path, key: str | None, api: str | None, token: str | None,
                as_: str) -> PinCheck:  # fmt: skip
    if api is not None and not token:
        raise ValueError("--api needs --token")
    origin, log_key, note, proof = _from_api(api, token or "") if api else _from_installation(as_)
    public_key = key or log_key
    base64.b64decode(public_key, validate=True)
    pins = read_pins(file, origin, public_key)
    check = check_new_checkpoint(note, pins, public_key, origin, proof)
    record(file, origin, public_key, pins, note, check)
    return check


def _report(check: PinCheck, file: Path) -> None:
    if check.ok and check.checkpoint is not None:
        console.print(
            f"[bold green]OK[/]: size {check.checkpoint.size} extends the {check.pinned} "
            f"checkpoints pinned in {file}"
        )
        return
    for problem in check.problems:
        console.print(f"[bold red]ALARM[/]: {problem}")
    if check.evidence is not None:
        console.print(f"both signed notes are kept in {check.evidence}")


def pin(
    file: PinFileOption,
    key: KeyOption = None,
    api: ApiOption = None,
    token: TokenOption = None,
    as_: AsOption = "regulator",
) -> None:
    """Fetch the log's checkpoint, check it against every checkpoint pinned in the file
    (same tree or a proven extension), and pin it."""
    try:
        check = _check_once(file, key, api, token, as_)
    except (PinError, LedgerError, SandboxError, ValueError, OSError) as exc:
        errors.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    _report(check, file)
    if not check.ok:
        raise typer.Exit(1)


def monitor(
    file: PinFileOption,
    every: Annotated[float, typer.Option(help="seconds between checks", min=1.0)] = 60.0,
    times: Annotated[int, typer.Option(help="checks to make", min=1, max=MAX_MONITOR_CHECKS)] = 60,
    key: KeyOption = None,
    api: ApiOption = None,
    token: TokenOption = None,
    as_: AsOption = "regulator",
) -> None:
    """``pin`` every ``--every`` seconds, ``--times`` times; stops at the first alarm."""
    for number in range(times):
        if number:
            time.sleep(every)
        pin(file, key, api, token, as_)
