"""The ledger against the adversaries a regulator worries about, on SQLite and on PostgreSQL.

Someone who can write the database but holds no key deletes trailing checkpoints, rewrites
an entry and re-hashes everything, or rolls the log back: the signer, which remembers what
it signed in its own state file, refuses to sign; ``sandbox audit verify`` fails and names
the stretch; the API's checkpoint endpoint serves no new signature. An entry re-serialised
non-canonically fails verification even when every hash and signature was redone with the
key. A damaged ledger exports as it is, with ``problems.json``, and its bundle fails too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient
from typer.testing import CliRunner

from policies.facts import OperatorFacts
from sandbox import identity
from sandbox.api import create_app
from sandbox.cli import app
from sandbox.config import Settings
from sandbox.governance import get_governance
from sandbox.identity import sandbox_key
from sandbox.ledger import Ledger, LedgerIntegrityError, canonical_entry
from sandbox.ledger.bundle import PROBLEMS, verify_bundle
from sandbox.ledger.checkpoint import Checkpoint, sign_checkpoint
from sandbox.registry.principals import find_principal
from sandbox.services import principals as principal_service
from sandbox.vocabulary import OPERATOR_ID
from tests.ledger.conftest import SIZE
from tests.ledger.helpers import fill, make_record, rehash_everything


def sql(ledger: Ledger, *statements: str, **params: object) -> None:
    with ledger.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement), params)


def checkpoint_sizes(ledger: Ledger) -> list[int]:
    with ledger.engine.connect() as conn:
        rows = conn.execute(text("SELECT size FROM ledger_checkpoint ORDER BY size")).all()
    return [row.size for row in rows]


def audit(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["audit", *args])
    return result.exit_code, result.output


def api_checkpoint(settings: Settings) -> tuple[int, dict[str, object]]:
    """``GET /audit/checkpoint`` as the installation's regulator."""
    application = create_app(settings, run_capacity=0)
    gov = get_governance(settings)
    if find_principal(gov.engine, "reg-anna") is None:
        principal_service.register_principal(
            gov, OperatorFacts(OPERATOR_ID), "reg-anna", "regulator",
            identity.public_b64(identity.generate_key()),
        )  # fmt: skip
    token = principal_service.issue_token_locally(gov, "regulator", "reg-anna").token
    with TestClient(application) as client:
        answer = client.get("/audit/checkpoint", headers={"Authorization": f"Bearer {token}"})
    return answer.status_code, answer.json()


def roll_back_to_25(ledger: Ledger) -> None:
    """Without the key: cut the log back to 25 entries (and its checkpoints to size 20),
    re-hashing what is left."""
    sql(
        ledger,
        "DELETE FROM ledger_checkpoint WHERE size > 20",
        "DELETE FROM ledger_party WHERE idx >= 25",
        "DELETE FROM ledger_entry WHERE idx >= 25",
        "UPDATE ledger_head SET size = 25",
    )
    rehash_everything(ledger.engine)


def rewrite_past(ledger: Ledger) -> None:
    """Without the key: drop the checkpoints after size 20, turn entry 25's decision around,
    re-hash everything, so the entries and every stored hash agree with each other."""
    forged = canonical_entry(make_record(25, job_id="job-forged")).decode()
    sql(
        ledger,
        "DELETE FROM ledger_checkpoint WHERE size > 20",
        "UPDATE ledger_entry SET entry = :forged, job_id = 'job-forged' WHERE idx = 25",
        forged=forged,
    )
    rehash_everything(ledger.engine)


def test_the_honest_ledger_signs_and_serves(ledger: Ledger, settings: Settings) -> None:
    fill(ledger, 5, start=SIZE)
    assert ledger.checkpoint().size == SIZE + 5
    status, body = api_checkpoint(settings)
    assert status == 200 and body["size"] >= SIZE + 5
    assert audit("verify")[0] == 0


def test_a_database_writer_cannot_get_a_rewritten_history_signed(
    ledger: Ledger, settings: Settings
) -> None:
    rewrite_past(ledger)
    fill(ledger, 3, start=SIZE)  # the log goes on; the next checkpoint would cover the forgery
    with pytest.raises(LedgerIntegrityError, match="signed at size 40 is missing"):
        ledger.checkpoint()
    # Another process with the key (the API, the coordinator) refuses alike.
    with pytest.raises(LedgerIntegrityError, match="refusing to sign"):
        Ledger.open(settings).checkpoint()
    status, body = api_checkpoint(settings)
    assert status == 500 and "refusing to sign" in str(body["detail"])
    assert checkpoint_sizes(ledger) == [10, 20]
    code, output = audit("verify")
    assert code == 1
    assert "entries 20..39 do not produce the root signed at size 40" in output
    assert "signer signed last (size 40) is missing" in output
    # Putting the deleted checkpoint rows back does not help: the entries under them changed.
    rows_back = Ledger.open(settings)._signer.read(ledger.public_key, ledger.origin)
    assert rows_back is not None
    sql(
        ledger,
        "INSERT INTO ledger_checkpoint (size, root, note, signed_at) "
        "VALUES (40, :root, :note, CURRENT_TIMESTAMP)",
        root=rows_back.checkpoint.root,
        note=rows_back.note,
    )
    with pytest.raises(LedgerIntegrityError, match="entries before index 40 were rewritten"):
        ledger.checkpoint()


def test_a_rollback_is_refused_and_reported(ledger: Ledger, settings: Settings) -> None:
    roll_back_to_25(ledger)
    with pytest.raises(LedgerIntegrityError, match="rolled back or truncated"):
        ledger.checkpoint()
    status, _ = api_checkpoint(settings)
    assert status == 500
    code, output = audit("verify")
    assert code == 1 and "missing (truncated)" in output
    # Growing a different history past the signed size does not pass either.
    fill(ledger, 20, start=100)
    with pytest.raises(LedgerIntegrityError, match="refusing to sign"):
        ledger.checkpoint()
    assert audit("verify")[0] == 1


def test_a_deleted_middle_checkpoint_breaks_the_chain(ledger: Ledger) -> None:
    sql(ledger, "DELETE FROM ledger_checkpoint WHERE size = 20")
    code, output = audit("verify")
    assert code == 1
    assert "the checkpoint at size 20, which the checkpoint at size 30 names" in output


def test_a_non_canonical_entry_fails_even_re_hashed_and_re_signed(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    """The operator, with the key, re-serialises entry 5 (same content, other bytes),
    re-hashes everything and re-signs every checkpoint."""
    with ledger.engine.connect() as conn:
        original = conn.execute(text("SELECT entry FROM ledger_entry WHERE idx = 5")).scalar_one()
    spaced = json.dumps(json.loads(original), indent=1)
    assert spaced != original and json.loads(spaced) == json.loads(original)
    sql(ledger, "UPDATE ledger_entry SET entry = :e WHERE idx = 5", e=spaced)
    rehash_everything(ledger.engine)
    key = sandbox_key(settings.keys_dir, "operator")
    with ledger.engine.begin() as conn:
        for size in checkpoint_sizes(ledger):
            root = ledger.root(size)
            note = sign_checkpoint(Checkpoint(ledger.origin, size, root), key)
            conn.execute(
                text("UPDATE ledger_checkpoint SET root = :r, note = :n WHERE size = :s"),
                {"r": root, "n": note, "s": size},
            )
    ledger._signer.path.unlink()  # the operator holds the signer's files too
    report = ledger.verify()
    assert not report.ok and report.first_bad_index == 5
    assert any("RFC 8785 canonical form" in p for p in report.problems)
    code, output = audit("verify")
    assert code == 1 and "canonical form" in output
    with pytest.raises(LedgerIntegrityError, match="canonical"):
        fill(ledger, 1, start=SIZE)
        ledger._signer.path.unlink(missing_ok=True)
        ledger.checkpoint()
    bundle = tmp_path / "bundle"
    assert audit("export", "--out", str(bundle))[0] == 0
    checked = verify_bundle(bundle, ledger.public_key)
    assert not checked.ok and checked.first_bad_index == 5
    assert any("canonical form" in p for p in checked.problems)


def test_a_damaged_ledger_exports_as_evidence_with_its_problems(
    ledger: Ledger, tmp_path: Path
) -> None:
    healthy = tmp_path / "healthy"
    assert audit("export", "--out", str(healthy))[0] == 0
    assert not (healthy / PROBLEMS).exists() and verify_bundle(healthy, ledger.public_key).ok

    forged = canonical_entry(make_record(15, job_id="job-forged")).decode()
    sql(ledger, "UPDATE ledger_entry SET entry = :f WHERE idx = 15", f=forged)
    before = checkpoint_sizes(ledger)
    damaged = tmp_path / "damaged"
    code, output = audit("export", "--out", str(damaged))
    assert code == 0, output
    assert checkpoint_sizes(ledger) == before  # nothing was signed over the damage
    problems = json.loads((damaged / PROBLEMS).read_text())
    assert {"index": 15, "kind": "changed"}.items() <= problems[0].items()
    entries = (damaged / "entries.jsonl").read_text().splitlines()
    assert len(entries) >= SIZE and entries[15] == forged  # the evidence as it is
    report = verify_bundle(damaged, ledger.public_key)
    assert not report.ok and report.first_bad_index == 15
    assert any("entry 15" in p and "changed" in p for p in report.problems)
    code, output = audit("verify-bundle", str(damaged), "--key", ledger.public_key_b64)
    assert code == 1 and "problems.json" in output


def test_the_operator_re_signing_a_rewritten_history_is_caught_by_any_pin(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    pins = tmp_path / "pins.json"
    code, output = audit("pin", "--file", str(pins))
    assert code == 0 and "OK" in output, output
    old_note = tmp_path / "old.note"
    old_note.write_text(json.loads(pins.read_text())["notes"][-1])
    fill(ledger, 10, start=SIZE)
    code, output = audit("pin", "--file", str(pins))
    assert code == 0, output  # a proven extension of what was pinned
    assert len(json.loads(pins.read_text())["notes"]) == 2

    # The operator holds the key and the signer's file: rewrite, re-hash, forget, re-sign.
    rewrite_past(ledger)
    ledger._signer.path.unlink()
    forged = Ledger.open(settings).checkpoint()
    assert forged.size > SIZE
    code, output = audit("pin", "--file", str(pins))
    assert code == 1 and "ALARM" in output and "rewritten" in output, output
    [evidence] = tmp_path.glob("pins.alarm-*.json")
    kept = json.loads(evidence.read_text())
    assert kept["shown"] != kept["pinned"][-1] and len(kept["pinned"]) == 2
    assert len(json.loads(pins.read_text())["notes"]) == 2  # the forgery was not pinned
    # Any earlier note a reader kept fails the live log and its export.
    assert audit("verify", "--pin", str(old_note))[0] == 1
    bundle = tmp_path / "bundle"
    assert audit("export", "--out", str(bundle))[0] == 0
    assert verify_bundle(bundle, ledger.public_key).ok  # self-consistent on its own ...
    code, output = audit(
        "verify-bundle", str(bundle), "--key", ledger.public_key_b64, "--pin", str(old_note)
    )
    assert code == 1 and "first bad index: 20" in output, output  # ... but not with the pin


def test_a_pin_file_of_another_log_or_a_rolled_back_log_is_an_error_or_alarm(
    ledger: Ledger, tmp_path: Path
) -> None:
    pins = tmp_path / "pins.json"
    assert audit("pin", "--file", str(pins))[0] == 0
    document = json.loads(pins.read_text())
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**document, "origin": "elsewhere.example/log"}))
    code, output = audit("pin", "--file", str(other))
    assert code == 2 and "pins another log" in output
    roll_back_to_25(ledger)
    ledger._signer.path.unlink()
    code, output = audit("pin", "--file", str(pins))
    assert code == 1 and "rolled back" in output, output
