"""A company's node refusing a task: written to its own log, signed, kept until delivered.

``refuse`` writes the refusal to the node's hash-chained log and returns the signed notice
(:mod:`sandbox.protocol.notices`). ``pending`` lists the notices in the log that the sandbox
has not acknowledged; ``mark_delivered`` records an acknowledgement (itself a log line).
"""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.node.home import NodeHome
from sandbox.node.locallog import HashChainLog
from sandbox.protocol.notices import MAX_REASON, RefusalNotice, sign_notice


@dataclass(frozen=True)
class SignedNotice:
    notice: RefusalNotice
    text: str
    signature: str


def refuse(
    node: NodeHome,
    cause: str,
    reason: str,
    task: str,
    job: str | None = None,
    run: str | None = None,
) -> SignedNotice:
    """Write the refusal to the node's log and sign its notice."""
    log = HashChainLog(node.local_log_path)
    line = log.append(
        {
            "kind": "refused",
            "cause": cause,
            "job": job,
            "run": run,
            "task": task,
            "reason": reason[:MAX_REASON],
        }
    )
    notice = RefusalNotice(
        company=node.company_id,
        job=job,
        run=run,
        task=task,
        cause=cause,
        reason=reason[:MAX_REASON],
        time=line.time,
        log_index=line.index,
        log_hash=line.hash,
    )
    text, signature = sign_notice(node.key(), notice)
    return SignedNotice(notice, text, signature)


def _events(node: NodeHome) -> list[tuple[int, str, str, dict[str, object]]]:
    return [
        (line.index, line.time, line.hash, line.event)
        for line in HashChainLog(node.local_log_path).read()
    ]


def notices(node: NodeHome) -> list[SignedNotice]:
    """Every refusal in the node's log, as signed notices (signed again on reading: the
    signature is deterministic over the same text)."""
    key = node.key()
    out = []
    for index, time, digest, event in _events(node):
        if event.get("kind") != "refused":
            continue
        notice = RefusalNotice(
            company=node.company_id,
            job=event.get("job"),  # type: ignore[arg-type]
            run=event.get("run"),  # type: ignore[arg-type]
            task=str(event.get("task")),
            cause=str(event.get("cause")),
            reason=str(event.get("reason")),
            time=time,
            log_index=index,
            log_hash=digest,
        )
        text, signature = sign_notice(key, notice)
        out.append(SignedNotice(notice, text, signature))
    return out


def delivered(node: NodeHome) -> set[str]:
    """The ids of the notices the sandbox acknowledged."""
    return {
        str(event.get("notice"))
        for _, _, _, event in _events(node)
        if event.get("kind") == "notice-delivered"
    }


def pending(node: NodeHome) -> list[SignedNotice]:
    done = delivered(node)
    return [n for n in notices(node) if n.notice.notice_id not in done]


def mark_delivered(node: NodeHome, notice_ids: list[str], where: str) -> None:
    log = HashChainLog(node.local_log_path)
    for notice_id in notice_ids:
        log.append({"kind": "notice-delivered", "notice": notice_id, "to": where})
