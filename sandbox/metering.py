"""The process's own CPU accounting, read by a company's node around each task it serves and
by the coordinator around each job it runs."""

from __future__ import annotations

import resource


def cpu_seconds() -> float:
    """User and system CPU seconds of this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
