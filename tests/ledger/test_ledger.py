"""The ledger on a real SQLite file: appends, queries, proofs, checkpoints, failures."""

from __future__ import annotations

import json
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from sandbox.config import Settings
from sandbox.db import dispose_engines, get_engine
from sandbox.ledger import (
    EntryNotFound,
    Ledger,
    LedgerError,
    LedgerIntegrityError,
    LedgerWriteError,
    RecordError,
    canonical_entry,
    leaf_hash,
    verify_checkpoint,
    verify_consistency,
    verify_inclusion,
)
from sandbox.ledger.store import QUERY_COLUMNS, query_columns
from tests.ledger import naive_merkle as naive
from tests.ledger.helpers import (
    BASE_TIME,
    fill,
    make_record,
    make_round_record,
    open_ledger,
    rehash_everything,
)


@pytest.fixture
def ledger(tmp_settings: Settings) -> Ledger:
    return open_ledger(tmp_settings)


def test_append_returns_consecutive_indices_and_leaf_hashes(ledger: Ledger) -> None:
    first = ledger.append(make_record(0))
    rest = ledger.append_many([make_record(1), make_record(2)])
    assert [item.index for item in (first, *rest)] == [0, 1, 2]
    assert first.leaf_hash == leaf_hash(canonical_entry(make_record(0)))
    assert first.record_id == "rec-0"
    assert ledger.size == 3
    stored = ledger.entry(1)
    assert stored.record == make_record(1)
    assert stored.entry == canonical_entry(make_record(1))
    assert ledger.append_many([]) == []


def test_entry_not_found(ledger: Ledger) -> None:
    ledger.append(make_record(0))
    with pytest.raises(EntryNotFound):
        ledger.entry(1)


def test_a_failed_batch_appends_nothing(ledger: Ledger) -> None:
    fill(ledger, 5)
    with pytest.raises(LedgerWriteError):
        ledger.append_many([make_record(10), make_record(3)])  # rec-3 is already recorded
    assert ledger.size == 5
    with pytest.raises(EntryNotFound):
        ledger.entry(5)
    with pytest.raises(RecordError):
        ledger.append_many([make_record(20), make_record(20)])
    assert ledger.size == 5
    assert ledger.append(make_record(10)).index == 5


def test_a_database_failure_raises_and_leaves_the_log_whole(ledger: Ledger) -> None:
    fill(ledger, 3)
    with ledger.engine.begin() as conn:
        conn.execute(text("DROP TABLE ledger_node"))
    with pytest.raises(LedgerWriteError):
        ledger.append(make_record(3))  # entry 3 completes the node over 2..3
    assert ledger.size == 3
    with pytest.raises(EntryNotFound):
        ledger.entry(3)


def test_the_ledger_refuses_a_database_of_another_origin(tmp_settings: Settings) -> None:
    engine = get_engine(tmp_settings.database_url)
    state = tmp_settings.keys_dir / "signer.json"
    Ledger(engine, Ed25519PrivateKey.generate(), "one.example/log", state)
    with pytest.raises(LedgerError, match=r"one\.example/log"):
        Ledger(engine, Ed25519PrivateKey.generate(), "two.example/log", state)


def test_entries_are_filtered_by_the_query_columns(ledger: Ledger) -> None:
    fill(ledger, 60)
    ledger.append(make_round_record(1, ["acme-bank", "zeta-health"]))

    def indices(**filters: object) -> list[int]:
        return [item.index for item in ledger.entries(limit=1000, **filters)]

    records = {i: make_record(i) for i in range(60)}
    assert indices(principal="engineer:e2") == [i for i in range(60) if i % 5 == 2]
    assert indices(job_id="job-3") == [i for i in range(60) if i % 7 == 3]
    assert indices(action="job.admit") == [i for i in range(60) if i % 4 == 0]
    assert indices(allowed=False) == [i for i in range(60) if i % 3 == 0]
    assert indices(allowed=True, data_owner="acme-bank") == [
        i for i in range(60) if i % 3 != 0 and records[i].resource.owner == "acme-bank"
    ]
    # A company sees every entry about its data, and the round it took part in.
    assert indices(company="zeta-health") == [i for i in range(60) if i % 3 == 1] + [60]
    assert indices(company="sandbox-lab") == list(range(60))
    assert indices(
        since=BASE_TIME + timedelta(minutes=10), until=BASE_TIME + timedelta(minutes=20)
    ) == list(range(10, 20))
    assert indices(company="nobody") == []


def test_entries_are_paged_by_index(ledger: Ledger) -> None:
    fill(ledger, 25)
    pages, after = [], -1
    while page := ledger.entries(after_index=after, limit=10):
        pages.append([item.index for item in page])
        after = page[-1].index
    assert pages == [list(range(10)), list(range(10, 20)), list(range(20, 25))]
    assert [item.index for item in ledger.iter_entries(start=7, stop=12)] == list(range(7, 12))
    with pytest.raises(ValueError):
        ledger.entries(limit=0)
    with pytest.raises(ValueError):
        ledger.entries(limit=1001)


def test_checkpoints_grow_and_stay_consistent(ledger: Ledger) -> None:
    empty = ledger.checkpoint()
    assert empty.size == 0
    fill(ledger, 10)
    first = ledger.checkpoint()
    assert ledger.checkpoint() == first  # nothing new: nothing signed
    fill(ledger, 7, start=10)
    second = ledger.checkpoint()
    assert (first.size, second.size) == (10, 17)
    assert [cp.size for cp in ledger.checkpoints()] == [0, 10, 17]
    assert ledger.latest_checkpoint() == second
    head = verify_checkpoint(second.note, ledger.public_key_b64)
    assert head.root == ledger.root(17)
    proof = ledger.consistency_proof(10, 17)
    assert proof.verify(first.root, second.root)
    assert verify_consistency(10, 17, first.root, second.root, proof.hashes)
    inclusion = ledger.inclusion_proof(12)
    assert inclusion.tree_size == 17
    assert verify_inclusion(ledger.entry(12).leaf_hash, 12, 17, inclusion.hashes, head.root)


def test_proofs_need_a_tree_that_exists(ledger: Ledger) -> None:
    with pytest.raises(LedgerError):
        ledger.inclusion_proof(0)  # no checkpoint yet
    fill(ledger, 4)
    with pytest.raises(LedgerError):
        ledger.root(5)
    with pytest.raises(LedgerError):
        ledger.inclusion_proof(0, tree_size=5)
    with pytest.raises(EntryNotFound):
        ledger.inclusion_proof(4, tree_size=4)
    with pytest.raises(ValueError):
        ledger.consistency_proof(3, 2)


def _sql(ledger: Ledger, statement: str, **params: object) -> None:
    with ledger.engine.begin() as conn:
        conn.execute(text(statement), params)


def test_checkpoint_refuses_to_sign_a_changed_entry(ledger: Ledger) -> None:
    fill(ledger, 8)
    ledger.checkpoint()
    fill(ledger, 4, start=8)
    _sql(ledger, "UPDATE ledger_entry SET entry = replace(entry, 'job-3', 'job-4') WHERE idx = 10")
    with pytest.raises(LedgerIntegrityError, match="entry 10"):
        ledger.checkpoint()
    assert ledger.latest_checkpoint().size == 8


def test_checkpoint_refuses_to_sign_a_truncated_log(ledger: Ledger) -> None:
    fill(ledger, 8)
    ledger.checkpoint()
    _sql(ledger, "DELETE FROM ledger_entry WHERE idx >= 6")
    _sql(ledger, "UPDATE ledger_head SET size = 6")
    with pytest.raises(LedgerIntegrityError, match="rolled back or truncated"):
        ledger.checkpoint()


def test_checkpoint_refuses_a_tree_inconsistent_with_the_last_one(ledger: Ledger) -> None:
    fill(ledger, 8)
    ledger.checkpoint()
    fill(ledger, 8, start=8)
    # Rewrite the signed past wholesale: every hash recomputed, only the signature can tell.
    forged = canonical_entry(make_record(0, job_id="job-forged")).decode()
    _sql(ledger, "UPDATE ledger_entry SET entry = :forged WHERE idx = 0", forged=forged)
    rehash_everything(ledger.engine)
    with pytest.raises(LedgerIntegrityError, match="were rewritten"):
        ledger.checkpoint()
    assert ledger.latest_checkpoint().size == 8


def test_a_tampered_stored_checkpoint_is_not_trusted(ledger: Ledger) -> None:
    fill(ledger, 3)
    ledger.checkpoint()
    _sql(ledger, "UPDATE ledger_checkpoint SET note = replace(note, '\n3\n', '\n2\n')")
    with pytest.raises(LedgerIntegrityError):
        ledger.latest_checkpoint()
    with pytest.raises(LedgerIntegrityError):
        ledger.checkpoint()


def test_reading_a_changed_entry_fails_closed(ledger: Ledger) -> None:
    fill(ledger, 3)
    _sql(ledger, "UPDATE ledger_entry SET entry = replace(entry, 'job-1', 'job-2') WHERE idx = 1")
    with pytest.raises(LedgerIntegrityError):
        ledger.entry(1)


def test_verify_reports_unattested_entries(ledger: Ledger) -> None:
    fill(ledger, 5)
    ledger.checkpoint()
    fill(ledger, 3, start=5)
    report = ledger.verify()
    assert report.ok and report.size == 8 and report.attested_size == 5
    assert report.checkpoints == 1 and report.first_bad_index is None


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=6), st.data())
def test_stored_tree_matches_the_naive_reference(batches: list[int], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as folder:
        engine = get_engine(f"sqlite:///{Path(folder) / 'ledger.db'}")
        try:
            ledger = Ledger(
                engine,
                Ed25519PrivateKey.generate(),
                "test.example/log",
                Path(folder) / "signer.json",
            )
            number = 0
            for batch in batches:
                ledger.append_many([make_record(number + i) for i in range(batch)])
                number += batch
            entries = [canonical_entry(make_record(i)) for i in range(number)]
            for size in sorted({1, number, data.draw(st.integers(1, number))}):
                assert ledger.root(size) == naive.mth(entries[:size])
                index = data.draw(st.integers(0, size - 1))
                assert list(ledger.inclusion_proof(index, size).hashes) == naive.path(
                    index, entries[:size]
                )
                old_size = data.draw(st.integers(1, size))
                assert list(ledger.consistency_proof(old_size, size).hashes) == naive.proof(
                    old_size, entries[:size]
                )
            assert ledger.verify().ok
        finally:
            dispose_engines()


def test_query_columns_come_in_their_declared_order() -> None:
    document = json.loads(canonical_entry(make_record(1)))
    assert tuple(query_columns(document)) == QUERY_COLUMNS
