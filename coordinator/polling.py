"""Replies collected promptly: a Grid whose ``send_and_receive`` polls every tenth of a second.

Flower's deployment-engine grid (``flwr.superlink.grid.http_grid``) sleeps a fixed 3 s between
two pulls of the replies it waits for, so every exchange with the companies ends up to 3 s
after its last reply arrived: about 1.5 s on average for each of a round's exchanges (train,
evaluate, and each SecAgg+ stage), in every job. The simulation engine's grid polls every
0.1 s already. This wrapper goes through the Grid's public interface only (``push_messages``
and ``pull_messages``), so that both engines wait for replies the same way; a pull is a
small request to the SuperLink, ten a second while replies are outstanding.

``SANDBOX_REPLY_POLL_S`` sets another interval (seconds, above 0 and at most 3).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.run import Run

DEFAULT_POLL_S = 0.1
MAX_POLL_S = 3.0


def poll_interval() -> float:
    """The configured interval, refused when it is not a number in (0, 3]."""
    raw = os.environ.get("SANDBOX_REPLY_POLL_S", "")
    if not raw:
        return DEFAULT_POLL_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"SANDBOX_REPLY_POLL_S must be a number of seconds, not {raw!r}") from None
    if not 0 < value <= MAX_POLL_S:
        raise ValueError(f"SANDBOX_REPLY_POLL_S must lie in (0, {MAX_POLL_S}], not {value}")
    return value


class PromptGrid(Grid):
    """``inner`` with a ``send_and_receive`` that pulls every ``poll_s`` seconds."""

    def __init__(self, inner: Grid, poll_s: float | None = None) -> None:
        self.inner = inner
        self.poll_s = poll_interval() if poll_s is None else poll_s

    def set_run(self, run: Run) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Run:
        return self.inner.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self.inner.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages``, then pull until every one is answered or ``timeout`` passes
        (with ``timeout`` None, until every one is answered), as Flower's grids do."""
        outstanding = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while outstanding:
            arrived = list(self.pull_messages(outstanding))
            replies.extend(arrived)
            outstanding.difference_update(m.metadata.reply_to_message_id for m in arrived)
            if not outstanding:
                break
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                time.sleep(min(self.poll_s, remaining))
            else:
                time.sleep(self.poll_s)
        return replies
