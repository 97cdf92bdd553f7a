"""The ``sandbox audit`` commands besides tamper detection: proofs, checkpoints, listings.
Each of these reads is decided by the policy and recorded, as the API's are (the first one
also starts the installation's policy set, whose activation is recorded too)."""

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


def last_action(ledger: Ledger) -> tuple[str, str]:
    """The action of the ledger's last entry and who acted."""
    [entry] = ledger.entries(after_index=ledger.size - 2, limit=1)
    return entry.record.action, entry.record.actor.principal


def test_proof_prints_a_proof_anyone_can_check(ledger: Ledger) -> None:
    code, output = cli("proof", "5", "--json")
    assert code == 0, output
    assert last_action(ledger) == ("decision.read_audit", "regulator")
    shown = json.loads(output)
    assert shown["verified"] is True and shown["tree_size"] == ledger.size
    head = verify_checkpoint(shown["checkpoint"], ledger.public_key_b64)  # signed, not trusted
    proof = [bytes.fromhex(element) for element in shown["proof"]]
    leaf = bytes.fromhex(shown["leaf_hash"])
    assert verify_inclusion(leaf, 5, head.size, proof, head.root)
    assert json.loads(shown["entry"])["record_id"] == "rec-5"

    code, output = cli("proof", "5")
    assert code == 0
    assert f"verified: entry 5 is in the signed tree of {shown['tree_size']} entries" in output
    for element in shown["proof"]:
        assert element in output


def test_proof_signs_a_checkpoint_when_the_entry_is_newer(ledger: Ledger) -> None:
    ledger.checkpoint()
    fill(ledger, 3, start=12)
    code, output = cli("proof", "13", "--json")
    assert code == 0, output
    assert json.loads(output)["tree_size"] == ledger.size  # the read's decision included
    assert ledger.latest_checkpoint().size == ledger.size


def test_proof_of_a_missing_or_changed_entry_fails(ledger: Ledger) -> None:
    code, output = cli("proof", "10000")
    assert code == 2 and "no ledger entry at index 10000" in output
    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE ledger_entry SET entry = replace(entry, 'rec-5', 'rec-x')"))
    code, output = cli("proof", "5")
    assert code == 1 and "entry 5" in output


def test_checkpoint_prints_the_signed_note(ledger: Ledger) -> None:
    code, output = cli("checkpoint")
    assert code == 0
    signed = verify_checkpoint(output, ledger.verifier_key).size
    assert 12 < signed <= ledger.size  # signed after the read's decision was recorded
    code, again = cli("checkpoint")
    assert verify_checkpoint(again, ledger.verifier_key).size == signed + 1  # the next read


def test_entries_lists_and_filters(ledger: Ledger) -> None:
    ledger.append(make_round_record(1, ["zeta-health", "orbit-retail"]))
    code, output = cli("entries", "--company", "zeta-health", "--json")
    assert code == 0, output
    listed = json.loads(output)
    # The entries about the company, the decision on this very read among them.
    expected = [e.index for e in ledger.entries(company="zeta-health")]
    assert [item["index"] for item in listed] == expected
    assert expected[:5] == [1, 4, 7, 10, 12] and listed[-1]["action"] == "decision.read_audit"
    code, output = cli("entries", "--action", "round.complete", "--limit", "5")
    assert code == 0 and "round.complete" in output and "job-fl" in output
    # A job scope names a job of the registry; these entries were written without one.
    code, output = cli("entries", "--job", "job-fl")
    assert code == 2 and "no job 'job-fl'" in output


def test_verify_an_empty_ledger(tmp_settings: Settings) -> None:
    code, output = cli("verify")
    assert code == 0 and "0 entries" in output
