"""Time in the sandbox: always UTC, always timezone-aware.

Every timestamp column of the registry and the ledger is SQLModel's ``UTCDateTime``, which
hands back aware UTC datetimes on every database (SQLite stores none); a time from outside
(a CLI option, a form) goes through :func:`as_utc`. Times are written as RFC 3339 with a
``Z``.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive value is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def rfc3339(value: datetime, *, micros: bool = False) -> str:
    """``2026-01-01T12:00:00Z`` (with ``.123456`` when ``micros``)."""
    pattern = "%Y-%m-%dT%H:%M:%S.%fZ" if micros else "%Y-%m-%dT%H:%M:%SZ"
    return as_utc(value).strftime(pattern)
