"""Eight writers at once, as threads and as processes, on SQLite and on Postgres, leave a
gapless, duplicate-free log that verifies."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest

from sandbox.config import Settings, load_settings
from sandbox.ledger import Ledger
from tests.ledger.workers import append_as_writer, worker_context

WRITERS = 8
OPERATIONS = 16  # per writer: 12 single appends and 4 batches of 3


def _expected_records() -> int:
    batches = sum(1 for operation in range(OPERATIONS) if operation % 4 == 3)
    return WRITERS * (OPERATIONS - batches + 3 * batches)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(
    request: pytest.FixtureRequest, tmp_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    if request.param == "postgres":
        monkeypatch.setenv("SANDBOX_DATABASE_URL", request.getfixturevalue("pg_url"))
    return load_settings()


def _check(ledger: Ledger, results: list[list[tuple[int, str]]]) -> None:
    total = _expected_records()
    appended = [item for writer in results for item in writer]
    assert sorted(index for index, _ in appended) == list(range(total))  # no gap, no repeat
    for writer in results:  # each writer's records landed in the order it wrote them
        indices = [index for index, _ in writer]
        assert indices == sorted(indices)
    stored = {entry.index: entry.record.record_id for entry in ledger.iter_entries()}
    assert stored == dict(appended)
    assert ledger.size == total
    ledger.checkpoint()
    report = ledger.verify()
    assert report.ok, report.problems
    assert report.attested_size == total and report.checkpoints > 1


def test_eight_threads(settings: Settings) -> None:
    ledger = Ledger.open(settings)
    barrier = threading.Barrier(WRITERS)
    work = partial(
        append_as_writer,
        settings.database_url,
        str(settings.keys_dir),
        settings.ledger_origin,
        operations=OPERATIONS,
        barrier=barrier,
    )
    with ThreadPoolExecutor(WRITERS) as pool:
        results = list(pool.map(lambda writer: work(writer=writer), range(WRITERS)))
    _check(ledger, results)


def test_eight_processes(settings: Settings) -> None:
    ledger = Ledger.open(settings)  # creates the tables and the operator key first
    context = worker_context()
    with context.Manager() as manager:
        barrier = manager.Barrier(WRITERS)
        arguments = [
            (settings.database_url, str(settings.keys_dir), settings.ledger_origin, writer,
             OPERATIONS, barrier)
            for writer in range(WRITERS)
        ]  # fmt: skip
        with context.Pool(WRITERS) as pool:
            results = pool.starmap(append_as_writer, arguments)
    _check(ledger, results)
