"""Problems a verification finds, as evidence: each with the entry index it concerns (when
one is known), a kind a program can sort on, and the message a person reads."""

from __future__ import annotations

from typing import Any

KINDS: tuple[tuple[str, str], ...] = (
    ("canonical form", "non-canonical"),
    ("split view", "split-view"),
    ("rolled back", "rolled-back"),
    ("truncated", "truncated"),
    ("does not verify", "signature"),
    ("no signature", "signature"),
    ("no checkpoint", "signature"),
    ("predecessor", "chain"),
    ("new chain", "chain"),
    ("deleted", "deleted"),
    ("missing", "deleted"),
    ("inserted", "inserted"),
    ("reordered", "reordered"),
    ("changed", "changed"),
    ("differs", "changed"),
)


def problem_kind(message: str) -> str:
    """The kind of a problem, from its message (``other`` when none fits)."""
    lowered = message.lower()
    return next((kind for words, kind in KINDS if words in lowered), "other")


def problem_records(problems: list[str], indices: list[int | None]) -> list[dict[str, Any]]:
    """``{"index", "kind", "message"}`` per problem, in the order found."""
    return [
        {"index": index, "kind": problem_kind(message), "message": message}
        for message, index in zip(problems, indices, strict=True)
    ]
