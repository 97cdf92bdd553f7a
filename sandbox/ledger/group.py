"""Group commit: appends by concurrent callers share one transaction and one synced commit.

A caller hands its batch in and waits. Whoever finds no commit under way becomes the leader:
it takes every batch waiting at that moment (its own included), writes them in one
transaction, in the order they arrived, and wakes each caller with its own result once the
commit is durable. Batches that arrive meanwhile wait for the next commit. So a decision is
still acknowledged only after its record is on disk (fail-closed is unchanged), but a burst
of concurrent decisions pays for one synced commit instead of one each.

Each caller's batch stays all-or-nothing. When a shared transaction fails, the leader
writes each batch of it again on its own, so that one bad batch (a repeated record id, say)
fails only its caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# A shared transaction holds at most this many items; more wait for the next one.
MAX_GROUP_ITEMS = 1_000


@dataclass
class _Waiting(Generic[Item, Result]):
    items: Sequence[Item]
    results: list[Result] | None = None
    error: BaseException | None = None
    done: bool = False
    woken: threading.Event = field(default_factory=threading.Event)


class GroupCommit(Generic[Item, Result]):
    """Batches of items written by ``write`` (one transaction, one result per item, in
    order), grouped across the threads that submit them at the same time."""

    def __init__(self, write: Callable[[list[Item]], list[Result]]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._waiting: list[_Waiting[Item, Result]] = []
        self._leading = False
        self.commits = 0  # how many transactions were written: for tests and benchmarks

    def submit(self, items: Sequence[Item]) -> list[Result]:
        """Write ``items`` (all or none, after the batches submitted before them); return
        their results once they are committed, or raise what failed them."""
        mine: _Waiting[Item, Result] = _Waiting(items)
        with self._lock:
            self._waiting.append(mine)
        while True:
            with self._lock:
                if mine.done:
                    break
                lead = not self._leading
                if lead:
                    self._leading = True
                    group = self._take()
            if lead:
                try:
                    self._commit(group)
                finally:
                    with self._lock:
                        self._leading = False
                        following = self._waiting[:1]
                    for waiting in following:  # the next group's first caller leads it
                        waiting.woken.set()
            else:
                mine.woken.wait()
                mine.woken.clear()
        if mine.error is not None:
            raise mine.error
        assert mine.results is not None
        return mine.results

    def _take(self) -> list[_Waiting[Item, Result]]:
        """The waiting batches for one transaction, oldest first (called under the lock)."""
        group: list[_Waiting[Item, Result]] = []
        count = 0
        while self._waiting and (
            not group or count + len(self._waiting[0].items) <= MAX_GROUP_ITEMS
        ):
            waiting = self._waiting.pop(0)
            group.append(waiting)
            count += len(waiting.items)
        return group

    def _commit(self, group: list[_Waiting[Item, Result]]) -> None:
        try:
            results = self._write([item for waiting in group for item in waiting.items])
            self.commits += 1
        except BaseException as exc:
            if len(group) == 1:
                self._finish(group[0], error=exc)
                return
            for waiting in group:  # each on its own: only a bad batch fails its caller
                try:
                    own = self._write(list(waiting.items))
                    self.commits += 1
                except BaseException as own_error:
                    self._finish(waiting, error=own_error)
                else:
                    self._finish(waiting, results=own)
            return
        start = 0
        for waiting in group:
            end = start + len(waiting.items)
            self._finish(waiting, results=results[start:end])
            start = end

    def _finish(
        self,
        waiting: _Waiting[Item, Result],
        results: list[Result] | None = None,
        error: BaseException | None = None,
    ) -> None:
        with self._lock:
            waiting.results, waiting.error, waiting.done = results, error, True
        waiting.woken.set()
