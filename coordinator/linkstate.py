"""A cheaper message pull for Flower's in-memory LinkState, the store the simulation engine
keeps its messages in.

Flower 1.42's ``InMemoryLinkState.get_message_ins(node_id, ...)`` runs its validity check
(expiry, federation membership) on *every* stored message before it looks at whom the
message is for. The simulation engine pulls once per node, so a stage of a round with n
companies costs n pulls over n stored messages, each check included: O(n²) checks per stage.
At 200 companies it was the largest item in the coordinator's profile
(``benchmarks/scale.py``).

``get_message_ins_for_node`` picks the node's undelivered messages first (a plain comparison
per message) and runs Flower's own check on those alone. What a node receives, in which
order and with which limit, is unchanged; a message for another node is checked, and
dropped if it expired, when that node pulls (or the ServerApp reads its replies), not now.
"""

from __future__ import annotations

from typing import Any

import flwr
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
from flwr.supercore.date import now

# The replacement mirrors this version's method; another version keeps Flower's own.
PATCHED_VERSION = "1.42."
_original = InMemoryLinkState.get_message_ins


def get_message_ins_for_node(
    self: Any, node_id: int, limit: int | None, *, run_id: int | None = None
) -> list[Any]:
    """Flower's ``get_message_ins`` with the check run only on the node's own messages."""
    if limit is not None and limit < 1:
        raise AssertionError("`limit` must be >= 1")
    found: list[Any] = []
    with self.lock:
        mine = [
            msg_id
            for msg_id, message in self.message_ins_store.items()
            if message.metadata.dst_node_id == node_id
            and message.metadata.delivered_at == ""
            and (run_id is None or message.metadata.run_id == run_id)
        ]
        for msg_id in mine:
            self._check_stored_messages({msg_id})
            message = self.message_ins_store.get(msg_id)
            if message is not None:  # still valid
                found.append(message)
            if limit and len(found) == limit:
                break
    delivered_at = now().isoformat()
    for message in found:
        message.metadata.delivered_at = delivered_at
    return found


def install() -> bool:
    """Use the per-node pull in this process's in-memory LinkStates; idempotent. Returns
    whether it is in use (only on the Flower version it mirrors)."""
    if not flwr.__version__.startswith(PATCHED_VERSION):
        return False
    InMemoryLinkState.get_message_ins = get_message_ins_for_node  # type: ignore[method-assign]
    return True


def original() -> Any:
    """Flower's own method (for the tests that compare the two)."""
    return _original
