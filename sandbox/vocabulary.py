"""The sandbox's vocabulary: the names every layer shares, each written once.

Job status and the transitions between statuses, data grades, risk tiers, roles, and the
identifier grammar with one pattern per kind of id. The spec models, the database, the
policy facts, the API and the console take their names from here.

A leaf module: it imports nothing of the project and nothing beyond the standard library
and pydantic, so that every layer may import it (``policies`` included, which otherwise
knows nothing of the sandbox).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, WithJsonSchema


# ------------------------------------------------------------------------------- jobs
class JobStatus(StrEnum):
    """Where a job stands. A job is filed with its admission already decided (``denied``,
    ``awaiting_approval`` or ``admitted``); ``filed`` is only the state before that."""

    FILED = "filed"
    DENIED = "denied"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    ADMITTED = "admitted"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"


TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.FILED: frozenset({JobStatus.DENIED, JobStatus.AWAITING_APPROVAL, JobStatus.ADMITTED}),
    JobStatus.AWAITING_APPROVAL: frozenset({JobStatus.APPROVED, JobStatus.REJECTED}),
    JobStatus.APPROVED: frozenset({JobStatus.RUNNING}),
    JobStatus.ADMITTED: frozenset({JobStatus.RUNNING}),
    # A run that died leaves its job running; the coordinator that resumes it starts again.
    # A start whose launch failed (no run began) puts the job back where it was.
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.RUNNING,
            JobStatus.COMPLETED,
            JobStatus.STOPPED,
            JobStatus.FAILED,
            JobStatus.ADMITTED,
            JobStatus.APPROVED,
        }
    ),
    JobStatus.STOPPED: frozenset({JobStatus.RUNNING}),
    JobStatus.FAILED: frozenset({JobStatus.RUNNING}),
    JobStatus.DENIED: frozenset(),
    JobStatus.REJECTED: frozenset(),
    JobStatus.COMPLETED: frozenset(),
}
"""Every status a job may move to from each status; anything else is refused."""

FILING_OUTCOMES = TRANSITIONS[JobStatus.FILED]
"""The statuses a job is stored with when it is filed: its admission is decided at once."""

RUNNABLE = frozenset(s for s, nexts in TRANSITIONS.items() if JobStatus.RUNNING in nexts)
"""Statuses from which a job's run may start (or resume)."""

NOT_RUNNABLE_BECAUSE: dict[JobStatus, str] = {
    JobStatus.FILED: "its admission has not been decided",
    JobStatus.AWAITING_APPROVAL: "it awaits a regulator's approval",
    JobStatus.DENIED: "its admission was denied",
    JobStatus.REJECTED: "a regulator rejected it",
    JobStatus.COMPLETED: "it has completed",
}


def may_move(current: str, to: str) -> bool:
    """Whether a job in ``current`` may move to ``to``."""
    return JobStatus(to) in TRANSITIONS[JobStatus(current)]


# ------------------------------------------------------------------- grades and tiers
Grade = Literal["general", "important", "core"]
"""Data classification grades, after GB/T 43697-2024."""
GRADES: tuple[Grade, ...] = get_args(Grade)

Tier = Literal["low", "medium", "high"]
"""Risk tiers, lowest first."""
TIERS: tuple[Tier, ...] = get_args(Tier)


# ------------------------------------------------------------------------------ roles
Role = Literal["company", "engineer", "regulator", "operator"]
"""Who acts through the API, the CLI and the console."""
ROLES: tuple[Role, ...] = get_args(Role)
REGISTERED_ROLES: tuple[Role, ...] = ("engineer", "regulator", "operator")
"""Roles the operator registers; companies become principals by joining."""
OPERATOR_ID = "operator"
"""The operator principal, created at first start from the sandbox's operator key."""
INSTALLATION_REGULATOR = "regulator"
"""The installation's own regulator, whose key is the sandbox's regulator key."""
INSTALLATION_ENGINEER = "engineer"
"""The engineer the sandbox's own CLI files jobs as by default."""
RESERVED_IDS = frozenset(
    {OPERATOR_ID, INSTALLATION_REGULATOR, INSTALLATION_ENGINEER, "coordinator", "sandbox", "admin", "administrator",
     "root", "system", "superlink", "anonymous"}
)  # fmt: skip
"""Ids no company or registered principal may take: the installation's own principals and
names that a reader would take for the sandbox itself. Every principal, company or not,
shares one namespace of ids."""


# ------------------------------------------------------------------------ identifiers
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
"""Ids that people choose: companies, principals, organisations, purposes, dataset names.
The registry, the policies and the ledger all accept them."""
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$"
"""Job ids (``job-`` and twelve hex digits when the sandbox makes them)."""
CONSENT_ID_PATTERN = JOB_ID_PATTERN
"""Consent ids (``consent-`` and twelve hex digits)."""
TOKEN_ID_PATTERN = JOB_ID_PATTERN
"""API token ids (``tok-`` and twelve hex digits)."""
SHA256_PATTERN = r"^[0-9a-f]{64}$"

_ID = re.compile(ID_PATTERN)
_JOB_ID = re.compile(JOB_ID_PATTERN)
_SHA256 = re.compile(SHA256_PATTERN)

ID_RULE = (
    "must start with a letter or digit and hold only letters, digits, '_' or '-' "
    "(at most 64 characters)"
)
JOB_ID_RULE = ID_RULE.replace("64", "40")


def _grammar(pattern: str, rule: str) -> Callable[[str], str]:
    """A check that says in words what is wrong with a bad value."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if compiled.match(value) is None:
            raise ValueError(f"{value[:80]!r} {rule}")
        return value

    return check


def _schema(pattern: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": pattern})


Id = Annotated[str, AfterValidator(_grammar(ID_PATTERN, ID_RULE)), _schema(ID_PATTERN)]
JobId = Annotated[
    str, AfterValidator(_grammar(JOB_ID_PATTERN, JOB_ID_RULE)), _schema(JOB_ID_PATTERN)
]
ConsentId = Annotated[
    str, AfterValidator(_grammar(CONSENT_ID_PATTERN, JOB_ID_RULE)), _schema(CONSENT_ID_PATTERN)
]
Sha256Hex = Annotated[
    str,
    AfterValidator(_grammar(SHA256_PATTERN, "must be 64 lowercase hexadecimal digits")),
    _schema(SHA256_PATTERN),
]


def is_id(value: object) -> bool:
    return isinstance(value, str) and _ID.match(value) is not None


def is_job_id(value: object) -> bool:
    return isinstance(value, str) and _JOB_ID.match(value) is not None


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and _SHA256.match(value) is not None


def new_id(prefix: str) -> str:
    """A fresh id of the sandbox's own making: ``<prefix>-`` and twelve hex digits."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def dataset_id(company_id: str, name: str) -> str:
    """A dataset's id: its company and its name."""
    return f"{company_id}/{name}"


MAX_PARTICIPANTS = 256
"""The most companies one job may name (and one ledger record may list)."""
