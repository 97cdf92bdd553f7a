"""A regulator witnesses the ledger from a machine of their own: ``sandbox audit witness``
against the API under uvicorn. An honest log is cosigned run after run (a consistency proof
each time); the cosignature lands on the stored checkpoint under the regulator's name. The
operator, holding the key and the signer's state, rewrites history and re-signs: the witness
refuses, keeps both signed notes and exits 1; a rolled-back log is refused the same way.
Bad cosignatures handed to the API are refused and stored nowhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from sandbox import identity
from sandbox.cli import app
from tests.api.conftest import World
from tests.ledger.helpers import operator_rewrites, rehash_everything
from tests.support.serving import serving


@pytest.fixture(scope="module")
def server(world: World) -> Iterator[str]:
    with serving(world.settings) as url:
        yield url


def run_witness(world: World, server: str, folder: Path) -> tuple[int, str]:
    key_file = folder.parent / "reg.pem"
    if not key_file.exists():
        identity.write_private_key(key_file, world.keys["reg"])
    result = CliRunner().invoke(app, [
        "audit", "witness", "--dir", str(folder), "--name", "reg", "--key-file", str(key_file),
        "--api", server, "--token", world.token("regulator"),
    ])  # fmt: skip
    return result.exit_code, result.output


def stored_note(world: World, size: int) -> str:
    return next(c.note for c in world.gov.ledger.checkpoints() if c.size == size)


def test_cosignatures_handed_in_are_checked(world: World) -> None:
    signed = world.gov.ledger.checkpoint()
    good = world.cosignature("regulator", signed)
    as_regulator = world.headers("regulator")
    # Signed by the company's key but under the regulator's name, a forged line, a size
    # without a checkpoint: refused, and the note is left as it was.
    wrong_key = world.cosignature("company", signed)["cosignature"].replace(
        "\u2014 construction ", "\u2014 reg "
    )
    for body, status in (
        ({**good, "cosignature": wrong_key}, 422),
        ({**good, "cosignature": good["cosignature"][:-20] + "A" * 19 + "\n"}, 422),
        ({**good, "size": signed.size + 10_000}, 404),
        ({**good, "size": -1}, 422),
    ):
        answer = world.client.post("/audit/cosignatures", json=body, headers=as_regulator)
        assert answer.status_code == status, (body, answer.text)
    assert stored_note(world, signed.size) == signed.note
    answer = world.client.post("/audit/cosignatures", json=good, headers=as_regulator)
    assert answer.status_code == 201 and answer.json()["cosigners"] == ["reg"]
    # Handing it in twice stores it once.
    assert world.client.post("/audit/cosignatures", json=good, headers=as_regulator).is_success
    assert stored_note(world, signed.size).count("\u2014 reg ") == 1

    # One cosignature is short of the policy set's quorum of two; the company's makes it.
    shown = CliRunner().invoke(app, ["audit", "witnesses", "--as", "reg"])
    assert shown.exit_code == 1 and "no checkpoint carries the quorum" in shown.output
    company = world.cosignature("company", signed)
    assert world.client.post(
        "/audit/cosignatures", json=company, headers=world.headers("company")
    ).is_success
    shown = CliRunner().invoke(app, ["audit", "witnesses", "--as", "reg"])
    assert shown.exit_code == 0, shown.output
    assert f"latest witnessed: size {signed.size}, by construction, reg" in shown.output


def test_a_regulator_witnesses_and_catches_a_rewrite_and_a_rollback(
    world: World, server: str, tmp_path: Path
) -> None:
    folder = tmp_path / "witness"
    code, output = run_witness(world, server, folder)
    assert code == 0 and "OK: cosigned size" in output, output
    first = json.loads((folder / "latest.json").read_text())
    size = int(first["note"].split("\n")[1])
    assert "\u2014 reg " in stored_note(world, size)
    code, output = run_witness(world, server, folder)  # the log grew: a consistency proof
    assert code == 0, output
    held = int(json.loads((folder / "latest.json").read_text())["note"].split("\n")[1])
    assert held > size

    # The operator rewrites entry 3, re-hashes, forgets what it signed and re-signs.
    ledger = world.gov.ledger
    operator_rewrites(ledger, 3, "construction", "constructi0n")
    code, output = run_witness(world, server, folder)
    assert code == 1 and "ALARM" in output and "rewritten" in output, output
    [alarm] = [json.loads(p.read_text()) for p in (folder / "alarms").glob("*.json")]
    assert alarm["cosigned"].split("\n")[1] == str(held) and alarm["shown"] != alarm["cosigned"]
    assert all("\u2014 reg " not in c.note for c in ledger.checkpoints())  # nothing cosigned

    # Rolled back to 20 entries and re-signed: smaller than what the witness cosigned.
    with ledger.engine.begin() as conn:
        for table in ("ledger_checkpoint", "ledger_party"):
            conn.execute(
                text(f"DELETE FROM {table}" + (" WHERE idx >= 20" if "party" in table else ""))
            )
        conn.execute(text("DELETE FROM ledger_entry WHERE idx >= 20"))
        conn.execute(text("UPDATE ledger_head SET size = 20"))
    rehash_everything(ledger.engine)
    ledger._signer.path.unlink()
    code, output = run_witness(world, server, folder)
    assert code == 1 and "rolled back" in output, output
    assert len(list((folder / "alarms").glob("*.json"))) == 2
