"""Tampering with a stored ledger, on a SQLite file and on Postgres, is found by the real CLI.

Each case edits the database behind the ledger's back with plain SQL, then runs
``sandbox audit verify`` and, through an export, ``sandbox audit verify-bundle``; both must
fail and name the first bad index.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from sandbox.cli import app
from sandbox.ledger import Ledger, LedgerWriteError, canonical_entry, leaf_hash
from tests.ledger.conftest import SIZE
from tests.ledger.helpers import fill, make_record, rehash_everything


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["audit", *args])
    return result.exit_code, result.output


def _run(ledger: Ledger, *statements: str, **params: object) -> None:
    with ledger.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement), params)


def _forged_entry(number: int) -> str:
    return canonical_entry(make_record(number, job_id="job-forged")).decode()


def change_entry_field(ledger: Ledger) -> int:
    _run(ledger, "UPDATE ledger_entry SET entry = replace(entry, 'job-3', 'job-9') WHERE idx = 17")
    return 17


def change_query_column(ledger: Ledger) -> int:
    _run(ledger, "UPDATE ledger_entry SET action = 'consent.grant' WHERE idx = 12")
    return 12


def change_decision_column(ledger: Ledger) -> int:
    _run(ledger, "UPDATE ledger_entry SET decision_allowed = NOT decision_allowed WHERE idx = 30")
    return 30


def remove_party(ledger: Ledger) -> int:
    _run(ledger, "DELETE FROM ledger_party WHERE idx = 21 AND company <> 'sandbox-lab'")
    return 21


def delete_row(ledger: Ledger) -> int:
    _run(ledger, "DELETE FROM ledger_entry WHERE idx = 23")
    return 23


def swap_rows(ledger: Ledger) -> int:
    _run(
        ledger,
        "UPDATE ledger_entry SET idx = -1 WHERE idx = 5",
        "UPDATE ledger_entry SET idx = 5 WHERE idx = 9",
        "UPDATE ledger_entry SET idx = 9 WHERE idx = -1",
    )
    return 5


def insert_row_at_end(ledger: Ledger) -> int:
    _copy_row_with_entry(ledger, source=3, target=SIZE, entry=_forged_entry(SIZE))
    return SIZE


def insert_row_in_the_middle(ledger: Ledger) -> int:
    _run(
        ledger,
        "UPDATE ledger_entry SET idx = -idx - 1 WHERE idx >= 15",
        "UPDATE ledger_entry SET idx = -idx WHERE idx < 0",
        "UPDATE ledger_head SET size = size + 1",
    )
    _copy_row_with_entry(ledger, source=14, target=15, entry=_forged_entry(1000))
    return 15


def _copy_row_with_entry(ledger: Ledger, source: int, target: int, entry: str) -> None:
    with ledger.engine.begin() as conn:
        row = conn.execute(text("SELECT * FROM ledger_entry WHERE idx = :i"), {"i": source})
        values = dict(row.one()._mapping)
        values.update(idx=target, entry=entry, record_id=f"forged-{target}",
                      leaf_hash=leaf_hash(entry.encode()))  # fmt: skip
        columns = ", ".join(values)
        placeholders = ", ".join(f":{name}" for name in values)
        conn.execute(text(f"INSERT INTO ledger_entry ({columns}) VALUES ({placeholders})"), values)


def truncate_and_fix_head(ledger: Ledger) -> int:
    _run(
        ledger,
        "DELETE FROM ledger_entry WHERE idx >= 35",
        "DELETE FROM ledger_party WHERE idx >= 35",
        "UPDATE ledger_head SET size = 35",
    )
    return 35


def truncate_rows_only(ledger: Ledger) -> int:
    _run(ledger, "DELETE FROM ledger_entry WHERE idx >= 36")
    return 36


def change_tree_node(ledger: Ledger) -> int:
    # Node (level 2, index 3) covers entries 12..15.
    _run(ledger, "UPDATE ledger_node SET hash = :h WHERE level = 2 AND idx = 3", h=bytes(32))
    return 12


def forge_and_rehash_everything(ledger: Ledger) -> int:
    # Every stored hash recomputed: only the checkpoint signed at 30 can tell, so the entries
    # after the last checkpoint that still holds (20) are the first that can't be trusted.
    _run(
        ledger,
        "UPDATE ledger_entry SET entry = :e, job_id = 'job-forged' WHERE idx = 26",
        e=_forged_entry(26),
    )
    rehash_everything(ledger.engine)
    return 20


TAMPERINGS: list[Callable[[Ledger], int]] = [
    change_entry_field,
    change_query_column,
    change_decision_column,
    remove_party,
    delete_row,
    swap_rows,
    insert_row_at_end,
    insert_row_in_the_middle,
    truncate_and_fix_head,
    truncate_rows_only,
    change_tree_node,
    forge_and_rehash_everything,
]


def test_an_untouched_ledger_verifies(ledger: Ledger, tmp_path: Path) -> None:
    code, output = cli("verify")
    assert code == 0, output
    assert "OK" in output and "40 entries" in output
    code, output = cli("export", "--out", str(tmp_path / "bundle"))
    assert code == 0, output
    code, output = cli("verify-bundle", str(tmp_path / "bundle"), "--key", ledger.public_key_b64)
    assert code == 0, output


@pytest.mark.parametrize("tamper", TAMPERINGS, ids=lambda tamper: tamper.__name__)
def test_audit_verify_names_the_first_bad_index(
    ledger: Ledger, tamper: Callable[[Ledger], int]
) -> None:
    first_bad = tamper(ledger)
    code, output = cli("verify")
    assert code == 1, output
    assert f"first bad index: {first_bad}" in output
    code, output = cli("verify", "--json")
    assert code == 1
    report = json.loads(output)
    assert report["ok"] is False and report["first_bad_index"] == first_bad


@pytest.mark.parametrize(
    "tamper",
    [change_entry_field, swap_rows, insert_row_in_the_middle, forge_and_rehash_everything],
    ids=lambda tamper: tamper.__name__,
)
def test_a_bundle_exported_from_a_tampered_ledger_fails(
    ledger: Ledger, tamper: Callable[[Ledger], int], tmp_path: Path
) -> None:
    """Export shows what is stored, tampered or not; the bundle's verifier finds it."""
    first_bad = tamper(ledger)
    bundle = tmp_path / "bundle"
    code, output = cli("export", "--out", str(bundle))
    if code != 0:
        # The log refused to sign a checkpoint over the tampered tail: also a detection.
        assert code == 1 and "refusing" in output
        return
    code, output = cli("verify-bundle", str(bundle), "--key", ledger.public_key_b64)
    assert code == 1, output
    assert f"first bad index: {first_bad}" in output


def test_rows_outside_the_log_are_found(ledger: Ledger) -> None:
    _copy_row_with_entry(ledger, source=3, target=-1, entry=_forged_entry(2000))
    _run(ledger, "INSERT INTO ledger_node (level, idx, hash) VALUES (0, 3, :h)", h=bytes(32))
    code, output = cli("verify")
    assert code == 1
    assert "2 rows at negative indices or levels were inserted" in output


def test_appending_after_a_truncation_fails(ledger: Ledger) -> None:
    truncate_and_fix_head(ledger)  # the tree nodes of the removed entries remain
    with pytest.raises(LedgerWriteError):
        fill(ledger, 1, start=100)


def test_a_tampered_checkpoint_fails_verification(ledger: Ledger) -> None:
    _run(ledger, "UPDATE ledger_checkpoint SET note = replace(note, '\n20\n', '\n21\n')")
    code, output = cli("verify")
    assert code == 1
    assert "checkpoint at size 20" in output


def test_verify_with_another_key_fails(ledger: Ledger) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sandbox.identity import public_b64

    code, output = cli("verify", "--key", public_b64(Ed25519PrivateKey.generate()))
    assert code == 1
    assert "no signature" in output
    code, output = cli("verify", "--key", ledger.public_key_b64)
    assert code == 0, output


@pytest.mark.parametrize(
    "tamper",
    [truncate_and_fix_head, insert_row_in_the_middle],
    ids=lambda tamper: tamper.__name__,
)
def test_the_ledger_refuses_to_sign_over_tampering(
    ledger: Ledger, tamper: Callable[[Ledger], int]
) -> None:
    tamper(ledger)
    code, output = cli("checkpoint")
    assert code == 1 and "refusing to sign" in output, output
    assert ledger.checkpoints()[-1].size == SIZE
