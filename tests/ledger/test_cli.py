"""The ``sandbox audit`` commands besides tamper detection: proofs, checkpoints, listings."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from sandbox.config import Settings
from sandbox.ledger import Ledger, verify_checkpoint, verify_inclusion
from tests.ledger.helpers import fill, make_round_record, open_ledger
from tests.ledger.test_tamper import cli


@pytest.fixture
def ledger(tmp_settings: Settings) -> Ledger:
    ledger = open_ledger(tmp_settings)
    fill(ledger, 12)
    return ledger


def test_proof_prints_a_proof_anyone_can_check(ledger: Ledger) -> None:
    code, output = cli("proof", "5", "--json")
    assert code == 0, output
    shown = json.loads(output)
    assert shown["verified"] is True and shown["tree_size"] == 12
    head = verify_checkpoint(shown["checkpoint"], ledger.public_key_b64)  # signed, not trusted
    proof = [bytes.fromhex(element) for element in shown["proof"]]
    leaf = bytes.fromhex(shown["leaf_hash"])
    assert verify_inclusion(leaf, 5, head.size, proof, head.root)
    assert json.loads(shown["entry"])["record_id"] == "rec-5"

    code, output = cli("proof", "5")
    assert code == 0
    assert "verified: entry 5 is in the signed tree of 12 entries" in output
    for element in shown["proof"]:
        assert element in output


def test_proof_signs_a_checkpoint_when_the_entry_is_newer(ledger: Ledger) -> None:
    ledger.checkpoint()
    fill(ledger, 3, start=12)
    code, output = cli("proof", "13", "--json")
    assert code == 0, output
    assert json.loads(output)["tree_size"] == 15
    assert ledger.latest_checkpoint().size == 15


def test_proof_of_a_missing_or_changed_entry_fails(ledger: Ledger) -> None:
    code, output = cli("proof", "12")
    assert code == 2 and "not in the tree" in output
    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE ledger_entry SET entry = replace(entry, 'rec-5', 'rec-x')"))
    code, output = cli("proof", "5")
    assert code == 1 and "entry 5" in output


def test_checkpoint_prints_the_signed_note(ledger: Ledger) -> None:
    code, output = cli("checkpoint")
    assert code == 0
    assert verify_checkpoint(output, ledger.verifier_key).size == 12
    code, again = cli("checkpoint")
    assert again == output  # nothing new, nothing signed


def test_entries_lists_and_filters(ledger: Ledger) -> None:
    ledger.append(make_round_record(1, ["zeta-health", "orbit-retail"]))
    code, output = cli("entries", "--company", "zeta-health", "--json")
    assert code == 0, output
    listed = json.loads(output)
    assert [item["index"] for item in listed] == [1, 4, 7, 10, 12]
    code, output = cli("entries", "--job", "job-fl", "--limit", "5")
    assert code == 0 and "round.complete" in output


def test_verify_an_empty_ledger(tmp_settings: Settings) -> None:
    code, output = cli("verify")
    assert code == 0 and "0 entries" in output
