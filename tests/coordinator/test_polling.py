"""The coordinator's grid collects replies promptly and still honours the exchange's timeout."""

from __future__ import annotations

import time
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import pytest
from flwr.serverapp import Grid

from coordinator.polling import DEFAULT_POLL_S, PromptGrid, poll_interval


class DelayedGrid(Grid):
    """Answers each pushed message after its own delay (None: never), like a link whose
    nodes reply at different times. Messages are stand-ins carrying only what is polled."""

    def __init__(self, delays: list[float | None]) -> None:
        self.delays = delays
        self.pushed_at = 0.0
        self.pulls = 0

    def set_run(self, run: Any) -> None:
        raise AssertionError("not used")

    @property
    def run(self) -> Any:
        raise AssertionError("not used")

    def create_message(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("not used")

    def get_node_ids(self) -> Iterable[int]:
        return range(len(self.delays))

    def push_messages(self, messages: Iterable[Any]) -> Iterable[str]:
        self.pushed_at = time.monotonic()
        return [f"m{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Any]:
        self.pulls += 1
        waited = time.monotonic() - self.pushed_at
        return [
            SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=mid))
            for mid in message_ids
            if (delay := self.delays[int(mid[1:])]) is not None and waited >= delay
        ]

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> Any:
        raise AssertionError("the wrapper waits for replies itself")


def test_replies_are_collected_within_a_poll_of_the_last_one() -> None:
    inner = DelayedGrid([0.05, 0.3, 0.4])
    started = time.monotonic()
    replies = list(PromptGrid(inner, poll_s=0.05).send_and_receive([1, 2, 3], timeout=30))  # type: ignore[list-item]
    took = time.monotonic() - started
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    # Flower's deployment grid would have slept 3 s after its first empty pull.
    assert 0.4 <= took < 1.5
    assert inner.pulls >= 3


def test_the_timeout_ends_the_wait_with_the_replies_that_came() -> None:
    inner = DelayedGrid([0.0, None])
    started = time.monotonic()
    replies = list(PromptGrid(inner, poll_s=0.05).send_and_receive([1, 2], timeout=0.5))  # type: ignore[list-item]
    took = time.monotonic() - started
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"]
    assert 0.5 <= took < 1.5


def test_the_poll_interval_is_configurable_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANDBOX_REPLY_POLL_S", raising=False)
    assert poll_interval() == DEFAULT_POLL_S
    monkeypatch.setenv("SANDBOX_REPLY_POLL_S", "0.5")
    assert poll_interval() == 0.5
    for bad in ("0", "-1", "4", "soon", "nan"):
        monkeypatch.setenv("SANDBOX_REPLY_POLL_S", bad)
        with pytest.raises(ValueError, match="SANDBOX_REPLY_POLL_S"):
            poll_interval()
