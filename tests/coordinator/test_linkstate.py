"""The simulation engine's per-node message pull gives each node what Flower's own pull
gives it: the same messages, in the same order, within the same limit, expired ones dropped,
and only the node's own messages checked."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from coordinator import linkstate


class FakeState:
    """What ``get_message_ins`` touches of an ``InMemoryLinkState``."""

    def __init__(self, messages: list[tuple[str, int, int, bool, str]]) -> None:
        self.lock = threading.RLock()
        self.expired: set[str] = set()
        self.checked: list[str] = []
        self.message_ins_store: dict[str, Any] = {}
        for msg_id, node, run, expired, delivered in messages:
            self.message_ins_store[msg_id] = SimpleNamespace(
                id=msg_id,
                metadata=SimpleNamespace(dst_node_id=node, run_id=run, delivered_at=delivered),
            )
            if expired:
                self.expired.add(msg_id)

    def _check_stored_messages(self, ids: set[str]) -> None:
        for msg_id in ids:
            self.checked.append(msg_id)
            if msg_id in self.expired:
                self.message_ins_store.pop(msg_id, None)


def messages() -> list[tuple[str, int, int, bool, str]]:
    out = []
    for i in range(40):
        node, run = i % 5, 1 + i % 2
        expired = i % 7 == 0
        delivered = "2026-01-01T00:00:00" if i % 11 == 0 else ""
        out.append((f"m{i}", node, run, expired, delivered))
    return out


@pytest.mark.parametrize("node", range(6))
@pytest.mark.parametrize("limit", [None, 1, 2, 100])
@pytest.mark.parametrize("run_id", [None, 1, 2])
def test_same_messages_as_flowers_pull(node: int, limit: int | None, run_id: int | None) -> None:
    ours, theirs = FakeState(messages()), FakeState(messages())
    got = linkstate.get_message_ins_for_node(ours, node, limit, run_id=run_id)
    expected = linkstate.original()(theirs, node, limit, run_id=run_id)
    assert [m.id for m in got] == [m.id for m in expected]
    assert all(m.metadata.delivered_at for m in got)
    # Only this node's messages were checked; another node's are checked when it pulls.
    assert all(
        ours.message_ins_store.get(i) is None or i in ours.checked for i in [m.id for m in got]
    )
    assert {ours_id for ours_id in ours.checked} <= {i for i, n, _, _, _ in messages() if n == node}
    # Pulling again gives nothing new: both marked what they handed out as delivered.
    again = linkstate.get_message_ins_for_node(ours, node, limit, run_id=run_id)
    assert not {m.id for m in again} & {m.id for m in got}


def test_bad_limit_is_refused_like_flower() -> None:
    with pytest.raises(AssertionError):
        linkstate.get_message_ins_for_node(FakeState([]), 0, 0)


def test_installed_on_the_pinned_flower() -> None:
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

    assert linkstate.install()
    assert InMemoryLinkState.get_message_ins is linkstate.get_message_ins_for_node
