"""Witnesses after C2SP tlog-witness and tlog-cosignature: a witness cosigns only a checkpoint
consistent with the last it cosigned, answers each wrong request with the specified status,
and, shown a rewritten or forked history (even one the operator signed), refuses, keeps both
notes and raises an alarm. Cosignatures verify with the witness's key only."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from sandbox.config import Settings
from sandbox.identity import public_b64
from sandbox.ledger import Ledger
from sandbox.ledger.checkpoint import Checkpoint, sign_checkpoint
from sandbox.ledger.errors import CheckpointError
from sandbox.ledger.witness import (
    Witness,
    WitnessKey,
    add_checkpoint_request,
    cosign,
    cosignature_time,
    parse_add_checkpoint,
    with_cosignatures,
    witnessed_by,
)
from tests.ledger.helpers import fill, open_ledger, rehash_everything

NAME = "construction.witness.example"


@pytest.fixture
def ledger(tmp_settings: Settings) -> Ledger:
    ledger = open_ledger(tmp_settings)
    fill(ledger, 10)
    return ledger


def witness_of(ledger: Ledger, folder: Path, key: Ed25519PrivateKey | None = None) -> Witness:
    return Witness(folder, NAME, key or Ed25519PrivateKey.generate(), ledger.origin,
                   ledger.public_key_b64)  # fmt: skip


def request(ledger: Ledger, old_size: int) -> str:
    head = ledger.checkpoint()
    proof = ledger.consistency_proof(old_size, head.size).hashes if old_size else ()
    return add_checkpoint_request(old_size, proof, head.note)


def test_a_witness_cosigns_consistent_growth_and_the_cosignature_verifies(
    ledger: Ledger, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    witness = witness_of(ledger, tmp_path / "w", key)
    first = witness.add_checkpoint(request(ledger, 0), now=1_700_000_000)
    assert first.status == 200 and first.body.startswith("\u2014 " + NAME + " ")
    note = with_cosignatures(ledger.checkpoint().note, [first.body])
    assert cosignature_time(note, NAME, public_b64(key)) == 1_700_000_000
    assert witnessed_by(note, [WitnessKey(NAME, public_b64(key))]) == [NAME]
    other = WitnessKey(NAME, public_b64(Ed25519PrivateKey.generate()))
    assert witnessed_by(note, [other]) == []
    fill(ledger, 7, start=10)
    second = witness.add_checkpoint(request(ledger, 10))
    assert second.status == 200 and witness.latest() is not None
    assert witness.latest()[0].size == 17  # type: ignore[index]
    assert witness.alarms() == []


def test_wrong_requests_get_the_specified_status(ledger: Ledger, tmp_path: Path) -> None:
    witness = witness_of(ledger, tmp_path / "w")
    assert witness.add_checkpoint(request(ledger, 0)).status == 200
    fill(ledger, 5, start=10)
    assert witness.add_checkpoint(request(ledger, 0)).status == 409  # it holds size 10
    assert witness.add_checkpoint(request(ledger, 0)).body == "10\n"
    note = ledger.checkpoint().note
    assert witness.add_checkpoint(add_checkpoint_request(99, [], note)).status == 400
    assert witness.add_checkpoint("old 10\n" + note).status == 400  # no empty line
    other_log = sign_checkpoint(Checkpoint("other.example/log", 1, b"\x01" * 32),
                                Ed25519PrivateKey.generate())  # fmt: skip
    assert witness.add_checkpoint(add_checkpoint_request(0, [], other_log)).status == 404
    forged = sign_checkpoint(Checkpoint(ledger.origin, 15, b"\x02" * 32),
                             Ed25519PrivateKey.generate())  # fmt: skip
    assert witness.add_checkpoint(add_checkpoint_request(10, [], forged)).status == 403
    bad_proof = add_checkpoint_request(10, [b"\x00" * 32], note)
    answer = witness.add_checkpoint(bad_proof)
    assert answer.status == 422 and answer.alarm is not None
    with pytest.raises(ValueError, match="63"):
        parse_add_checkpoint("old 1\n" + "\n".join(["AAAA"] * 64) + "\n\n" + note)


def test_a_rewritten_history_the_operator_signed_raises_the_alarm_with_both_notes(
    ledger: Ledger, tmp_settings: Settings, tmp_path: Path
) -> None:
    witness = witness_of(ledger, tmp_path / "w")
    assert witness.add_checkpoint(request(ledger, 0)).status == 200
    honest = ledger.checkpoint().note
    # The operator rewrites entry 3, re-hashes, and signs the forged tree at a larger size.
    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE ledger_entry SET entry = replace(entry, 'rec-3', 'rec-x') "
                          "WHERE idx = 3"))  # fmt: skip
    rehash_everything(ledger.engine)
    fill(ledger, 5, start=10)
    key = ledger._signing_key
    forged_root = ledger.root(15)
    forged = sign_checkpoint(Checkpoint(ledger.origin, 15, forged_root), key)
    proof = ledger.consistency_proof(10, 15).hashes  # from the forged tree: it cannot link
    answer = witness.add_checkpoint(add_checkpoint_request(10, proof, forged))
    assert answer.status == 422 and "rewritten" in str(answer.alarm)
    [alarm] = witness.alarms()
    assert alarm["cosigned"] == honest and alarm["shown"] == forged
    assert witness.latest()[1] == honest  # type: ignore[index]
    # A split view at the same size is refused too.
    same_size = sign_checkpoint(Checkpoint(ledger.origin, 10, ledger.root(10)), key)
    assert witness.add_checkpoint(add_checkpoint_request(10, [], same_size)).status == 422
    assert len(witness.alarms()) == 2


def test_a_cosignature_is_bound_to_its_note_and_time() -> None:
    key = Ed25519PrivateKey.generate()
    body = "log.example/a\n5\n" + base64.b64encode(b"\x03" * 32).decode() + "\n"
    line = cosign(body, key, NAME, 1_700_000_001)
    log_key = Ed25519PrivateKey.generate()
    note = sign_checkpoint(Checkpoint("log.example/a", 5, b"\x03" * 32), log_key)
    assert cosignature_time(note + line, NAME, public_b64(key)) == 1_700_000_001
    other = note.replace("\n5\n", "\n6\n")
    with pytest.raises(CheckpointError, match="does not verify"):
        cosignature_time(other + line, NAME, public_b64(key))
    with pytest.raises(CheckpointError, match="no cosignature"):
        cosignature_time(note, NAME, public_b64(key))
    with pytest.raises(ValueError, match="NAME=BASE64"):
        WitnessKey.parse("no-key")


def test_a_checkpoint_holds_the_cosignatures_of_every_company_of_the_largest_job(
    ledger: Ledger, tmp_path: Path
) -> None:
    """256 witnesses (the most companies a job may have) all cosign one checkpoint; the note
    still verifies with the log's key and carries every cosignature."""
    head = ledger.checkpoint()
    keys = []
    for number in range(256):
        key = Ed25519PrivateKey.generate()
        name = f"company-{number}"
        keys.append(WitnessKey(name, public_b64(key)))
        witness = Witness(tmp_path / name, name, key, ledger.origin, ledger.public_key_b64)
        answer = witness.add_checkpoint(add_checkpoint_request(0, [], head.note))
        assert answer.status == 200
        ledger.add_cosignature(head.size, answer.body, keys[-1])
    stored = ledger.latest_checkpoint()
    assert stored is not None and len(witnessed_by(stored.note, keys)) == 256
