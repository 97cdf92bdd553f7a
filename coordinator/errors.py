"""Errors that come back from company nodes, in the node's own words."""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def node_error(reason: str | None) -> str:
    """The node's own words from an error reply, without the transport's wrapping."""
    text = _ANSI.sub("", reason or "")
    if "Message: " in text:
        # Ray wraps the node's exception as <class '...'>:<'... Message: the words'>
        text = text.rsplit("Message: ", 1)[1].strip().removesuffix("'>")
    return " ".join(text.split())[:300] or "unspecified error"
