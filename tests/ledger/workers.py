"""Functions run in separate worker processes, and the way those processes are started."""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext
from pathlib import Path
from threading import Barrier

_PRELOAD = ["sandbox.ledger", "tests.ledger.helpers", "tests.ledger.workers"]


def worker_context() -> BaseContext:
    """Fresh processes forked from a clean server that has already imported the ledger.

    The server holds no database connection and no thread of the test process, so its
    children are as independent as spawned processes, without each importing everything
    again (which on two busy cores takes seconds).
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


def operator_public_key(keys_dir: str, barrier: Barrier) -> str:
    from sandbox.identity import public_b64, sandbox_key

    barrier.wait()
    return public_b64(sandbox_key(Path(keys_dir), "operator"))


def append_as_writer(
    database_url: str, keys_dir: str, origin: str, writer: int, operations: int, barrier: Barrier
) -> list[tuple[int, str]]:
    """One writer: single appends and small batches, writer 0 also signing checkpoints.
    Returns ``(index, record_id)`` of everything it appended, in its own order."""
    from sandbox.db import get_engine
    from sandbox.identity import sandbox_key
    from sandbox.ledger import Ledger, signer_state_path
    from tests.ledger.helpers import make_record

    ledger = Ledger(
        get_engine(database_url),
        sandbox_key(Path(keys_dir), "operator"),
        origin,
        signer_state_path(Path(keys_dir)),
    )
    barrier.wait()
    appended: list[tuple[int, str]] = []
    for operation in range(operations):
        number = writer * 10_000 + operation * 10
        if operation % 4 == 3:
            batch = [make_record(number + offset) for offset in range(3)]
            appended.extend((item.index, item.record_id) for item in ledger.append_many(batch))
        else:
            item = ledger.append(make_record(number))
            appended.append((item.index, item.record_id))
        if writer == 0 and operation % 5 == 4:
            ledger.checkpoint()
    return appended
