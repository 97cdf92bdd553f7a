"""A job's progress as server-sent events (``text/event-stream``).

The stream polls the registry: the job's status and each round the coordinator records, so
it follows a run whatever engine runs it. Events:

- ``status``: the job's status, rounds completed and reason, whenever one of them changes;
- ``round``: one recorded round (who took part, who was missing and why, its metrics); its
  event id is the round number, so a client that reconnects with ``Last-Event-ID`` gets only
  the rounds after it;
- ``end``: the last event: the job ended (completed, failed, stopped, denied, rejected), or
  the stream reached its time limit or the server is shutting down (``reason`` says which;
  reconnect to follow on).

Everything is bounded: a stream lives at most ``max_seconds``, a comment line keeps idle
connections open every ``keepalive`` seconds, and a server holds at most ``max_streams`` at
once and one principal at most ``per_principal`` (more are refused with 429).

The read of the job is decided (and recorded) when the stream opens; every
``recheck_seconds`` the stream checks the token again (revoked, expired, its principal
disabled) and asks the policy the same question again: when either fails, the stream ends
with an ``end`` event that says why. Each round is shaped for its reader as every other read
of the job is (:mod:`sandbox.services.views`), with the reader's scope as of the last check.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from sandbox.api.schemas import RoundOut
from sandbox.errors import SandboxError
from sandbox.governance import Governance
from sandbox.registry.models import Job
from sandbox.services import jobs as job_service
from sandbox.services.views import FigureScope

ENDED = ("completed", "failed", "stopped", "denied", "rejected")


class TooManyStreams(SandboxError):
    status = 429
    title = "Too many event streams"


@dataclass
class StreamLimits:
    poll_seconds: float = 1.0
    keepalive: float = 15.0
    max_seconds: float = 4 * 3600.0
    max_streams: int = 32
    per_principal: int = 4
    recheck_seconds: float = 3.0


class StreamSlots:
    """Counts open streams; a slot is released once, whichever way the stream ends."""

    def __init__(self, limit: int, per_principal: int = 4) -> None:
        self.limit = limit
        self.per_principal = per_principal
        self._open = 0
        self._by_principal: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, principal: str = "") -> _Slot:
        with self._lock:
            if self._open >= self.limit:
                raise TooManyStreams(
                    f"this server holds at most {self.limit} event streams at once; close one "
                    "or retry in a minute"
                )
            if self._by_principal.get(principal, 0) >= self.per_principal:
                raise TooManyStreams(
                    f"{principal or 'one principal'} holds {self.per_principal} event streams "
                    "already, the most one principal may; close one first"
                )
            self._open += 1
            self._by_principal[principal] = self._by_principal.get(principal, 0) + 1
        return _Slot(self, principal)

    def _give_back(self, principal: str) -> None:
        with self._lock:
            self._open -= 1
            left = self._by_principal.get(principal, 1) - 1
            if left:
                self._by_principal[principal] = left
            else:
                self._by_principal.pop(principal, None)


class _Slot:
    def __init__(self, slots: StreamSlots, principal: str) -> None:
        self._slots = slots
        self._principal = principal
        self._held = True
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if not self._held:
                return
            self._held = False
        self._slots._give_back(self._principal)


def event(name: str, data: dict[str, Any], event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _status(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "status": job.status,
        "rounds_completed": job.rounds_completed,
        "rounds_planned": int(job.spec.get("rounds", 0)),
        "reason": job.status_reason,
        "model_hash": job.model_hash,
        "ended_at": job.ended_at.isoformat() if job.ended_at else None,
    }


def _snapshot(
    gov: Governance, job_id: str, after_round: int, scope: FigureScope
) -> tuple[Job, list[RoundOut]]:
    job, rounds = job_service.poll_progress(gov, job_id, after_round, scope)
    return job, [RoundOut.model_validate(r) for r in rounds]


Recheck = Callable[[], FigureScope]
"""Checks the stream's token and read again; the reader's scope now, or raises."""


async def job_events(
    gov: Governance,
    job_id: str,
    slot: _Slot,
    limits: StreamLimits,
    stopping: threading.Event,
    recheck: Recheck,
    after_round: int = 0,
) -> AsyncIterator[str]:
    """The event stream of one job (see the module docstring)."""
    started = last_sent = time.monotonic()
    sent_round = after_round
    last_status: dict[str, Any] | None = None
    checked = -limits.recheck_seconds
    try:
        while True:
            if time.monotonic() - checked >= limits.recheck_seconds:
                try:
                    scope = await run_in_threadpool(recheck)
                except SandboxError as exc:
                    yield event("end", {"job_id": job_id, "why": f"access ended: {exc}"})
                    return
                checked = time.monotonic()
            job, rounds = await run_in_threadpool(_snapshot, gov, job_id, sent_round, scope)
            for record in rounds:
                yield event("round", record.model_dump(mode="json"), record.number)
                sent_round = record.number
                last_sent = time.monotonic()
            status = _status(job)
            if status != last_status:
                yield event("status", status)
                last_status = status
                last_sent = time.monotonic()
            if job.status in ENDED:
                yield event("end", {**status, "why": "the job ended"})
                return
            if stopping.is_set():
                yield event("end", {**status, "why": "the server is shutting down; reconnect"})
                return
            if time.monotonic() - started > limits.max_seconds:
                yield event("end", {**status, "why": "the stream's time limit; reconnect"})
                return
            if time.monotonic() - last_sent >= limits.keepalive:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            await asyncio.sleep(limits.poll_seconds)
    finally:
        slot.release()


def last_event_id(request: Request) -> int:
    """The round a reconnecting client has seen (its ``Last-Event-ID``), or 0."""
    raw = request.headers.get("last-event-id", "")
    return int(raw) if raw.isdigit() and len(raw) <= 9 else 0
