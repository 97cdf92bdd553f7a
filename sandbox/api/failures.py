"""Failed authentication: recorded in the ledger without letting a flood grow it, and
rate-limited per source.

A failure is a request refused as unauthenticated (no token, an unknown, expired or revoked
one, a signature that does not verify, a replayed request) or as cross-site. Failures are
counted per source (the client's address, kept only as a keyed hash that changes with every
start of the server: enough to tell sources apart within a minute, useless to identify
anyone) and per minute. The ledger gets at most two entries per source and minute (its first
failure, ``auth.failed``, and reaching the limit, ``auth.rate_limited``) and at most
``max_records`` in all per minute. From the limit on, every request from that source is
refused with 429 and ``Retry-After`` until the minute ends.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request

from sandbox.errors import SandboxError
from sandbox.governance import Governance
from sandbox.ledger import Actor, LedgerError, LedgerRecord

log = logging.getLogger(__name__)

UNAUTHENTICATED = Actor(principal="unauthenticated", role="system")


class TooManyFailures(SandboxError):
    status = 429
    title = "Too many failed authentications"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthFailures:
    """Counts of failed authentication per source and minute (this process's)."""

    def __init__(
        self, limit: int = 20, max_records: int = 60, clock: Callable[[], float] = time.time
    ) -> None:
        self.limit = limit
        self.max_records = max_records
        self._clock = clock
        self._key = os.urandom(32)
        self._minute = -1
        self._counts: dict[str, int] = {}
        self._records = 0
        self._lock = threading.Lock()

    def source(self, request: Request) -> str:
        host = request.client.host if request.client is not None else "unknown"
        return hmac.new(self._key, host.encode(), hashlib.sha256).hexdigest()[:16]

    def _roll(self, now: float) -> int:
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self._counts, self._records = minute, {}, 0
        return minute

    def check(self, request: Request) -> None:
        """Raise :class:`TooManyFailures` while the request's source is over the limit."""
        now = self._clock()
        source = self.source(request)
        with self._lock:
            self._roll(now)
            over = self._counts.get(source, 0) >= self.limit
        if over:
            wait = max(1, 60 - int(now % 60))
            raise TooManyFailures(
                f"{self.limit} failed authentications from this source in a minute; retry "
                f"in {wait} s",
                wait,
            )

    def failed(self, request: Request, gov: Governance, kind: str) -> None:
        """Count one failure and record what the bounds allow."""
        now = self._clock()
        source = self.source(request)
        with self._lock:
            minute = self._roll(now)
            count = self._counts[source] = self._counts.get(source, 0) + 1
            action = (
                "auth.failed"
                if count == 1
                else "auth.rate_limited"
                if count == self.limit
                else None
            )
            if action is None or self._records >= self.max_records:
                return
            self._records += 1
        details: dict[str, Any] = {"source": source, "kind": kind, "minute": minute}
        if action == "auth.rate_limited":
            details["failures"] = count
        try:
            gov.record(LedgerRecord(action=action, actor=UNAUTHENTICATED, details=details))
        except LedgerError as exc:  # the refusal stands; the log says why it is not recorded
            log.error("failed authentication not recorded: %s", exc)
