"""Talking to the company nodes: one task to many, the replies sorted and checked.

Every reply is checked against the protocol's allow-list before anyone looks at its values;
under governance its receipt too, and the receipts are recorded (through the governor).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from coordinator.errors import node_error
from sandbox.protocol.messages import (
    ARRAYS,
    CONFIG,
    TASK_EVALUATE,
    TASK_TRAIN,
    WARRANT,
    check_reply,
    to_array_record,
)
from sandbox.protocol.notices import detach

log = logging.getLogger("sandbox.coordinator")

ReplyObserver = Callable[[str, str, RecordDict], None]


class Progress(Protocol):
    def stage(self, name: str) -> None: ...

    def round_done(self, number: int, total: int, summary: dict[str, Any]) -> None: ...


class ReceiptChecker(Protocol):
    def verify(self, task: str, round_number: int, exchange: Exchange) -> None: ...

    def record_exchange(self, task: str, round_number: int, exchange: Exchange) -> None: ...


@dataclass
class Exchange:
    """Replies to one task: accepted contents by company, and who did not answer or was
    refused, with reasons. ``replies`` keeps every reply that arrived (accepted or not): a
    refused update may still have cost its company privacy. In a securely aggregated round
    ``masked`` holds the clear-text records of the companies in the aggregate instead."""

    accepted: dict[str, Message] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    replies: dict[str, RecordDict] = field(default_factory=dict)
    masked: dict[str, RecordDict] = field(default_factory=dict)
    receipts: dict[str, Any] = field(default_factory=dict)
    notices: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Signed refusal notices (payload, signature) of the nodes that refused the task."""

    def contents(self) -> dict[str, RecordDict]:
        """The contents of the replies taken so far: accepted, or inside a secure aggregate."""
        return {**{c: m.content for c, m in self.accepted.items()}, **self.masked}

    @property
    def took_part(self) -> list[str]:
        return sorted({*self.accepted, *self.masked})

    def reject(self, company: str, problems: list[str]) -> None:
        self.accepted.pop(company, None)
        self.masked.pop(company, None)
        earlier = self.rejected.get(company)
        self.rejected[company] = "; ".join([*([earlier] if earlier else []), *problems])[:1000]


class Messenger:
    """Sends a job's tasks over the Grid to the nodes that proved which company they are."""

    def __init__(
        self,
        grid: Grid,
        job_id: str,
        timeout: float,
        receipts: ReceiptChecker,
        progress: Progress | None = None,
        observer: ReplyObserver | None = None,
    ):
        self.grid = grid
        self.job_id = job_id
        self.timeout = timeout
        self.receipts = receipts
        self.progress = progress
        self.observer = observer
        self.nodes: dict[str, int] = {}
        self.warrant: str | None = None
        """The job's warrant, sent with every task: each node derives what it may do from it."""

    def stage(self, name: str) -> None:
        log.info("job %s: %s", self.job_id, name)
        if self.progress is not None:
            self.progress.stage(name)

    def observe(self, task: str, company: str, content: RecordDict) -> None:
        if self.observer is not None:
            self.observer(task, company, content)

    def send(
        self,
        task: str,
        companies: Iterable[str],
        config: dict[str, Any],
        arrays: dict[str, np.ndarray] | None = None,
        expected_arrays: dict[str, tuple[int, ...]] | None = None,
        round_number: int = 0,
        model_count: int | None = None,
    ) -> Exchange:
        """Send ``task`` to ``companies`` and sort the replies."""
        message_type = {TASK_TRAIN: MessageType.TRAIN, TASK_EVALUATE: MessageType.EVALUATE}.get(
            task, MessageType.QUERY
        )
        targets = {self.nodes[c]: c for c in companies}
        values = {"task": task, "job-id": self.job_id, **config}
        if self.warrant is not None:
            values[WARRANT] = self.warrant
        record: dict[str, Any] = {CONFIG: ConfigRecord(values)}
        if arrays is not None:
            record[ARRAYS] = to_array_record(arrays)
        messages = [
            Message(RecordDict(record), dst_node_id=node_id, message_type=message_type)
            for node_id in targets
        ]
        # A reply the link itself sends (an expired message) comes from the link's node id,
        # so replies are matched by the message they answer first, then by their sender.
        by_message = {m.object_id: targets[m.metadata.dst_node_id] for m in messages}
        replies = self.grid.send_and_receive(messages, timeout=self.timeout)
        outcome = Exchange()
        for reply in replies:
            company = by_message.get(reply.metadata.reply_to_message_id) or targets.get(
                reply.metadata.src_node_id
            )
            if company is None:
                continue
            if reply.has_error():
                reason, notice = detach(reply.error.reason or "")
                if notice is not None:
                    outcome.notices[company] = notice
                outcome.missing[company] = f"error at the node: {node_error(reason)}"
                continue
            self.observe(task, company, reply.content)
            outcome.replies[company] = reply.content
            problems = check_reply(task, reply.content, expected_arrays, model_count=model_count)
            if problems:
                outcome.rejected[company] = "; ".join(problems)[:1000]
                continue
            outcome.accepted[company] = reply
        for company in targets.values():
            if company not in outcome.accepted and company not in outcome.rejected:
                outcome.missing.setdefault(company, "no reply within the round timeout")
        self.settle_receipts(task, round_number, outcome)
        return outcome

    def settle_receipts(self, task: str, round_number: int, exchange: Exchange) -> None:
        self.receipts.verify(task, round_number, exchange)
        self.receipts.record_exchange(task, round_number, exchange)
