"""``sandbox regulator``: the regulator's own machine, where the regulator's private key lives.

``init`` makes the key (once) and the public folder the operator's servers read (the public
key and the regulator's signature over the shipped policy set, see
:mod:`sandbox.identity.installation`). ``approvals``, ``approve`` and ``reject`` work through
a sandbox's API with a token the regulator's key asks for: an approval is signed here, over a
statement this command builds from the job's spec as the API shows it and the code bundle the
regulator vouches for; the server's statement must say the same, or nothing is signed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sandbox import identity
from sandbox.cli.pins import api_call
from sandbox.cli.render import fail
from sandbox.identity.installation import write_public_folder
from sandbox.identity.requests import sign_token_request
from sandbox.protocol.jobspec import JobSpecError, parse_job_spec
from sandbox.protocol.warrant import approval_statement, note_sha256
from sandbox.utc import rfc3339, utcnow
from sandbox.vocabulary import INSTALLATION_REGULATOR

regulator_app = typer.Typer(
    help="The regulator's own machine: its key, its public folder, approvals through the API.",
    no_args_is_help=True,
)
console = Console(soft_wrap=True)
TOKEN_SECONDS = 600

ApiOption = Annotated[
    str, typer.Option("--api", help="the sandbox API's URL (https://, or http:// on loopback)")
]
KeyFileOption = Annotated[
    Path, typer.Option("--key-file", help="the regulator's Ed25519 private key (PEM)")
]
AsOption = Annotated[str, typer.Option("--as", help="the regulator's principal id")]


@regulator_app.command("init")
def init(
    key_file: KeyFileOption,
    public_dir: Annotated[
        Path, typer.Option("--public-dir", help="the public folder the operator's servers read")
    ],
    policy_dir: Annotated[
        Path | None, typer.Option("--policy-dir", help="the policy set to sign (default: shipped)")
    ] = None,
) -> None:
    """Make the regulator's key (once; kept in KEY_FILE, readable by its owner only) and write
    the public folder: the public key, and the regulator's signature over the policy set
    (the shipped one, or --policy-dir). Run it again to sign the set of a new version. Give
    the servers SANDBOX_REGULATOR_PUBLIC_KEY_FILE=<public-dir>/regulator.pub."""
    from policies.activation import signing_message
    from policies.policyset import DEFAULT_POLICY_DIR, hash_files, policy_files

    if key_file.resolve().is_relative_to(public_dir.resolve()):
        fail("the key file must not be in the public folder (that folder is handed over)")
    try:
        key = identity.load_or_create_key(key_file)
        policy_set_hash = hash_files(policy_files(policy_dir or DEFAULT_POLICY_DIR))
        signature = identity.sign(key, signing_message(policy_set_hash))
        public = write_public_folder(key, public_dir, policy_set_hash, signature)
    except (OSError, ValueError, identity.KeyFileError) as exc:
        fail(str(exc))
    console.print(f"regulator key {identity.key_id(identity.public_b64(key))} in {key_file}")
    console.print(f"public key: {public}; policy set {policy_set_hash} signed")


@regulator_app.command("endorse")
def endorse(
    principal_id: Annotated[str, typer.Argument(help="the new regulator's id")],
    public_key: Annotated[str, typer.Option("--public-key", help="its Ed25519 key (base64)")],
    key_file: KeyFileOption,
) -> None:
    """Endorse a further regulator's key with the installation regulator's key (in
    KEY_FILE): prints the key record the operator registers it with (`sandbox principal add
    ID --role regulator --public-key KEY --endorsement FILE`), which every company's node
    checks before it trusts that regulator's approvals."""
    from sandbox.protocol.warrant import endorse_key

    try:
        identity.decode_public_key_b64(public_key)
        signer = identity.read_private_key(key_file)
        record = endorse_key(signer, "regulator", principal_id, public_key, rfc3339(utcnow()))
    except (ValueError, OSError, identity.KeyFileError) as exc:
        fail(str(exc))
    typer.echo(json.dumps(record.model_dump(mode="json"), indent=2))


def _token(api: str, key_file: Path, regulator: str) -> str:
    key = identity.read_private_key(key_file)
    body = sign_token_request(key, "regulator", regulator, ttl_seconds=TOKEN_SECONDS)
    return str(api_call(api, None, "/auth/token", body)["token"])


@regulator_app.command("approvals")
def approvals(
    api: ApiOption, key_file: KeyFileOption, regulator: AsOption = INSTALLATION_REGULATOR
) -> None:
    """The jobs awaiting approval."""
    try:
        queue = api_call(api, _token(api, key_file, regulator), "/approvals")
    except (ValueError, OSError, identity.KeyFileError) as exc:
        fail(str(exc))
    table = Table()
    table.add_column("job", no_wrap=True)
    for heading in ("purpose", "tier", "filed by", "companies", "rounds"):
        table.add_column(heading, overflow="fold")
    for job in queue.get("jobs") or []:  # type: ignore[attr-defined]
        spec = job["spec"]
        table.add_row(job["id"], job["purpose"], job["risk_tier"], job["filed_by"],
                      ", ".join(spec.get("companies", [])), str(spec.get("rounds", "")))  # fmt: skip
    console.print(table)


def statement_to_sign(
    job_id: str, job: dict[str, Any], offered: str, regulator: str, note: str,
    code_bundle: str, signed_at: str,
) -> bytes:  # fmt: skip
    """The approval statement built here from the job asked for, its spec as shown, the code
    the regulator vouches for and the time taken here; the server's ``offered`` statement must
    be the same bytes."""
    if job.get("id") != job_id:
        raise ValueError(f"the API answered with job {job.get('id')!r}, not {job_id}")
    try:
        spec_hash = parse_job_spec(job["spec"]).spec_hash
    except JobSpecError as exc:
        raise ValueError("the job's spec does not parse: " + "; ".join(exc.problems)) from None
    if spec_hash != job["spec_hash"]:
        raise ValueError(f"the job's spec hashes to {spec_hash}, not its filed {job['spec_hash']}")
    own = approval_statement(job_id, spec_hash, code_bundle, regulator, signed_at,
                             note_sha256(note))  # fmt: skip
    if own != offered.encode("utf-8"):
        raise ValueError(
            "the server's approval statement differs from the one built here (another code "
            f"bundle than {code_bundle}, or another spec): nothing signed\nserver: {offered}"
        )
    return own


@regulator_app.command("approve")
def approve(
    job_id: Annotated[str, typer.Argument()],
    api: ApiOption,
    key_file: KeyFileOption,
    regulator: AsOption = INSTALLATION_REGULATOR,
    note: Annotated[str, typer.Option("--note", help="why (recorded)")] = "",
    code_bundle: Annotated[
        str | None,
        typer.Option("--code-bundle", help="the code bundle approved (default: this copy's)"),
    ] = None,
) -> None:
    """Approve a job: sign, with the key in KEY_FILE, the job's filed spec (as the API shows
    it, re-hashed here) and the code bundle (this copy's own, unless --code-bundle)."""
    from sandbox.protocol.bundle import running_bundle

    bundle = code_bundle or running_bundle().digest
    try:
        token = _token(api, key_file, regulator)
        job = api_call(api, token, f"/jobs/{job_id}")
        signed_at = rfc3339(utcnow())
        offered = api_call(
            api, token, f"/approvals/{job_id}/statement?signed_at={_q(signed_at)}&note={_q(note)}"
        )
        statement = statement_to_sign(
            job_id, job, str(offered["statement"]), regulator, note, bundle, signed_at
        )
        signature = identity.sign(identity.read_private_key(key_file), statement)
        body = {"note": note, "signed_at": signed_at, "signature": signature}
        approved = api_call(api, token, f"/approvals/{job_id}/approve", body)
    except (ValueError, OSError, identity.KeyFileError) as exc:
        fail(str(exc))
    console.print(f"Job {approved['id']} approved by {regulator} ({approved['status']})")


@regulator_app.command("reject")
def reject(
    job_id: Annotated[str, typer.Argument()],
    api: ApiOption,
    key_file: KeyFileOption,
    reason: Annotated[str, typer.Option("--reason", help="why (recorded)")],
    regulator: AsOption = INSTALLATION_REGULATOR,
) -> None:
    """Reject a job that awaits approval, with a reason."""
    try:
        token = _token(api, key_file, regulator)
        rejected = api_call(api, token, f"/approvals/{job_id}/reject", {"reason": reason})
    except (ValueError, OSError, identity.KeyFileError) as exc:
        fail(str(exc))
    console.print(f"Job {rejected['id']} rejected by {regulator}")


def _q(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")
