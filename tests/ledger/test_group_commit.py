"""Group commit: concurrent appends through one ledger share synced commits, each caller is
answered only once its records are committed, and a bad batch fails only its own caller."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from sandbox.config import Settings
from sandbox.ledger import Ledger
from sandbox.ledger.errors import LedgerWriteError
from sandbox.ledger.group import GroupCommit
from tests.ledger.helpers import make_record

THREADS = 8
EACH = 40


@pytest.fixture
def empty(settings: Settings) -> Ledger:
    return Ledger.open(settings)


def test_concurrent_appends_share_commits_and_every_one_lands(empty: Ledger) -> None:
    ledger = empty
    barrier = threading.Barrier(THREADS)

    def writer(number: int) -> list[tuple[int, str]]:
        barrier.wait()
        done = []
        for i in range(EACH):
            appended = ledger.append(make_record(number * 1000 + i))
            done.append((appended.index, appended.record_id))
        return done

    before = ledger._group.commits
    with ThreadPoolExecutor(THREADS) as pool:
        acknowledged = [pair for done in pool.map(writer, range(THREADS)) for pair in done]
    total = THREADS * EACH
    assert sorted(index for index, _ in acknowledged) == list(range(total))
    stored = {entry.index: entry.record.record_id for entry in ledger.iter_entries()}
    assert stored == dict(acknowledged)
    # Eight callers at once shared commits: fewer transactions than appends.
    assert ledger._group.commits - before < total
    ledger.checkpoint()
    report = ledger.verify()
    assert report.ok, report.problems


def test_a_repeated_record_fails_only_its_caller(empty: Ledger) -> None:
    ledger = empty
    ledger.append(make_record(1))
    barrier = threading.Barrier(THREADS)

    def writer(number: int) -> str:
        barrier.wait()
        try:
            ledger.append(make_record(1 if number == 0 else 100 + number))
        except LedgerWriteError:
            return "refused"
        return "appended"

    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(writer, range(THREADS)))
    assert outcomes == ["refused"] + ["appended"] * (THREADS - 1)
    assert ledger.size == THREADS
    assert ledger.verify().ok


def test_a_shared_transaction_that_fails_is_written_again_batch_by_batch() -> None:
    """Deterministic grouping: the first commit is held until three more batches wait, so
    they go together; one of them holds an item the writer refuses."""
    first_started, release = threading.Event(), threading.Event()
    calls: list[list[str]] = []
    committed: list[str] = []

    def write(items: list[str]) -> list[str]:
        calls.append(list(items))
        if items == ["first"]:
            first_started.set()
            assert release.wait(10)
        if "bad" in items:
            raise LedgerWriteError("nothing was appended: a refused item")
        committed.extend(items)
        return [f"ok:{item}" for item in items]

    group: GroupCommit[str, str] = GroupCommit(write)
    results: dict[str, object] = {}

    def submit(name: str, items: list[str]) -> None:
        try:
            results[name] = group.submit(items)
        except LedgerWriteError as exc:
            results[name] = exc

    leader = threading.Thread(target=submit, args=("first", ["first"]))
    leader.start()
    assert first_started.wait(10)
    others = [
        threading.Thread(target=submit, args=(name, items))
        for name, items in (("a", ["a1", "a2"]), ("b", ["bad"]), ("c", ["c1"]))
    ]
    for thread in others:
        thread.start()
    for _ in range(200):  # bounded: until all three wait behind the held commit
        with group._lock:
            if len(group._waiting) == 3:
                break
        threading.Event().wait(0.01)
    release.set()
    for thread in [leader, *others]:
        thread.join(10)
    assert calls[0] == ["first"]
    assert calls[1] == ["a1", "a2", "bad", "c1"]  # one shared transaction, in arrival order…
    assert calls[2:] == [["a1", "a2"], ["bad"], ["c1"]]  # …failed, so each batch alone
    assert results["first"] == ["ok:first"]
    assert results["a"] == ["ok:a1", "ok:a2"]
    assert results["c"] == ["ok:c1"]
    assert isinstance(results["b"], LedgerWriteError)
    assert committed == ["first", "a1", "a2", "c1"]


def test_a_caller_is_not_answered_before_its_commit() -> None:
    committed = threading.Event()

    def write(items: list[int]) -> list[int]:
        threading.Event().wait(0.2)
        committed.set()
        return items

    group: GroupCommit[int, int] = GroupCommit(write)
    assert group.submit([7]) == [7]
    assert committed.is_set()
    with pytest.raises(ZeroDivisionError):
        GroupCommit(lambda items: [1 // 0]).submit([1])
