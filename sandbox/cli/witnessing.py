"""``sandbox audit witness``: a regulator witnesses the sandbox's ledger from a machine of
their own, as each company's node does with every round (C2SP tlog-witness).

Each run fetches the log's latest signed checkpoint and a consistency proof from the
checkpoint this witness last cosigned, verifies both with the log key it pinned at its first
run (kept in the witness folder, never the key a server shows later), and hands its
cosignature (cosignature/v1, with the regulator's registered key) to the API. A checkpoint
that does not extend the one it cosigned, or a smaller one served as the latest, is an alarm:
both signed notes are kept in ``DIR/alarms/``, nothing is cosigned, and the command exits 1.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sandbox.cli.pins import ApiOption, KeyOption, api_call
from sandbox.files import write_atomic
from sandbox.identity import read_private_key
from sandbox.ledger.errors import CheckpointError
from sandbox.ledger.witness import Witness, add_checkpoint_request

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

LOG_FILE = "log.json"


def _pinned_log_key(folder: Path, origin: str, shown: str, given: str | None) -> str:
    """The log key this witness trusts: pinned at its first run (``--key``, or the key the
    server shows then), and never replaced by what a server shows later."""
    path = folder / LOG_FILE
    if path.exists():
        pinned = json.loads(path.read_text(encoding="utf-8"))
        if pinned["origin"] != origin:
            raise ValueError(f"this witness witnesses {pinned['origin']}, not {origin}")
        if given is not None and given != pinned["public_key"]:
            raise ValueError(f"--key differs from the log key pinned in {path}")
        return str(pinned["public_key"])
    key = given or shown
    base64.b64decode(key, validate=True)
    folder.mkdir(parents=True, exist_ok=True)
    document = {"origin": origin, "public_key": key}
    write_atomic(path, json.dumps(document).encode("utf-8"), mode=0o600)
    console.print(f"pinned the log key of {origin}: {key}")
    return key


class Alarm(Exception):
    """The log showed this witness a history that does not extend what it cosigned."""


def _cosign_latest(own: Witness, api: str, token: str, note: str, size: int) -> str:
    """Check the log's latest checkpoint against what ``own`` cosigned and cosign it; the
    cosignature line. Raises :class:`Alarm` (evidence kept) on a rollback or a fork."""
    try:
        rolled_back = own.served_smaller(note)
    except CheckpointError as exc:
        raise Alarm(f"the log's checkpoint does not verify with the pinned key: {exc}") from None
    if rolled_back is not None:
        raise Alarm(rolled_back)
    held = own.latest()
    held_size = 0 if held is None else held[0].size
    proof: list[bytes] = []
    if 0 < held_size < size:
        found = api_call(api, token, f"/audit/consistency?old_size={held_size}&new_size={size}")
        proof = [bytes.fromhex(str(h)) for h in found["proof"]]  # type: ignore[attr-defined]
    answer = own.add_checkpoint(add_checkpoint_request(held_size, proof, note))
    if answer.status == 422:
        raise Alarm(answer.body.strip())
    if answer.status != 200:
        raise ValueError(f"the witness did not cosign: {answer.status} {answer.body.strip()}")
    return answer.body


FolderOption = Annotated[
    Path,
    typer.Option(
        "--dir",
        help="the witness's folder: its pinned log key, the latest checkpoint it cosigned, "
        "the evidence of any alarm",
    ),
]


def witness(
    folder: FolderOption,
    name: Annotated[str, typer.Option("--name", help="your principal id: you cosign under it")],
    key_file: Annotated[
        Path, typer.Option("--key-file", help="your Ed25519 private key (PEM), as registered")
    ],
    api: ApiOption = None,
    token: Annotated[str | None, typer.Option("--token", help="your token for --api")] = None,
    key: KeyOption = None,
) -> None:
    """Witness the ledger: verify its latest checkpoint extends the one you cosigned last,
    cosign it and hand the cosignature to the sandbox. Exits 1 on an alarm."""
    if not api or not token:
        errors.print("[bold red]error:[/] a witness needs --api and --token")
        raise typer.Exit(2)
    try:
        head = api_call(api, token, "/audit/checkpoint")
        note, size = str(head["note"]), int(str(head["size"]))
        log_key = _pinned_log_key(folder, str(head["origin"]), str(head["public_key"]), key)
        own = Witness(folder, name, read_private_key(key_file), str(head["origin"]), log_key)
        for kept in own.alarms():
            errors.print(f"[bold red]ALARM[/] kept {kept['time']}: {kept['problem']}")
        line = _cosign_latest(own, api, token, note, size)
        stored = api_call(api, token, "/audit/cosignatures", {"size": size, "cosignature": line})
    except Alarm as alarm:
        console.print(f"[bold red]ALARM[/]: {alarm}")
        console.print(f"nothing was cosigned; the evidence is kept in {folder / 'alarms'}")
        raise typer.Exit(1) from None
    except (ValueError, KeyError, OSError) as exc:
        errors.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    cosigners = stored.get("cosigners")
    count = len(cosigners) if isinstance(cosigners, list) else 0
    console.print(f"[bold green]OK[/]: cosigned size {size}; {count} witnesses have cosigned it")


def witnesses(
    as_: Annotated[str, typer.Option("--as", help="who reads the ledger (a regulator)")] = (
        "regulator"
    ),
) -> None:
    """How far the ledger's history is witnessed: the policy set's quorum, how many
    checkpoints carry it, the latest witnessed one and who cosigned it (an audit read)."""
    from sandbox.cli.render import acting, governance
    from sandbox.errors import SandboxError
    from sandbox.services.witnesses import witness_status

    try:
        gov = governance()
        status = witness_status(gov, acting(gov, as_, "regulator"))
    except (SandboxError, ValueError) as exc:
        errors.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    console.print(
        f"quorum {status.quorum} of {status.witnesses} registered witnesses; "
        f"{status.witnessed} of {status.checkpoints} checkpoints witnessed"
    )
    latest = status.latest_witnessed
    if latest is None:
        console.print("[bold red]no checkpoint carries the quorum[/]: the history rests on the "
                      "operator's signature alone")  # fmt: skip
        raise typer.Exit(1)
    console.print(f"latest witnessed: size {latest.size}, by {', '.join(latest.cosigners)}")
