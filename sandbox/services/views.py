"""Every party sees its own view of a job.

The companies of one job are often competitors. Who may see one company's figures in a job
(its metrics, privacy parameters, counts, contribution, assessment) is the policy's
``read_job_figures``, asked for each company of the job whenever the job is read: a company
sees its own, the engineer who filed the job and the overseers see each company's. The read
of the job is the recorded decision; these questions are asked with the same policy set
and are not recorded on their own (:meth:`PolicyDecisionPoint.consider`).

Shaping removes, wherever they sit in a round's metrics or a job's result, every entry keyed
by a hidden company and every item about one (``{"company": …}``); a text that names one is
rewritten to say "another company". The participants' names stay: every company of a job
knows who takes part from the job's warrant. Job-level aggregates stay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from policies.facts import JobFiguresContext
from sandbox.governance import Governance, JobWorld
from sandbox.registry.models import Job, Release, Round

ANOTHER_COMPANY = "another company"


@dataclass(frozen=True)
class FigureScope:
    """The companies of a job whose figures the viewer may not see."""

    hidden: frozenset[str] = frozenset()

    def shape(self, value: Any) -> Any:
        """``value`` without the hidden companies' figures (a new object)."""
        if not self.hidden:
            return value
        pattern = re.compile(
            r"\b(" + "|".join(re.escape(c) for c in sorted(self.hidden, key=len, reverse=True))
            + r")\b"
        )  # fmt: skip
        return _shape(value, self.hidden, pattern)

    def round(self, record: Round) -> Round:
        if not self.hidden:
            return record
        fields = record.model_dump()
        for name in ("missing", "rejected", "sat_out", "metrics"):
            fields[name] = self.shape(fields[name])
        return Round(**fields)

    def job(self, job: Job) -> Job:
        if not self.hidden:
            return job
        fields = job.model_dump()
        for name in ("result", "status_reason"):
            fields[name] = self.shape(fields[name])
        return Job(**fields)

    def release(self, release: Release) -> Release:
        if not self.hidden:
            return release
        fields = release.model_dump()
        for name in ("reasons", "assessment", "contributions"):
            fields[name] = self.shape(fields[name])
        return Release(**fields)


def _shape(value: Any, hidden: frozenset[str], pattern: re.Pattern[str]) -> Any:
    if isinstance(value, dict):
        return {
            key: _shape(item, hidden, pattern) for key, item in value.items() if key not in hidden
        }
    if isinstance(value, list):
        return [
            item if isinstance(item, str) and item in hidden else _shape(item, hidden, pattern)
            for item in value
            if not (isinstance(item, dict) and item.get("company") in hidden)
        ]
    if isinstance(value, str):
        return pattern.sub(ANOTHER_COMPANY, value)
    return value


def figure_scope(gov: Governance, actor: Any, world: JobWorld) -> FigureScope:
    """Whose figures ``actor`` may not see in the job of ``world``, as the policy decides."""
    context = JobFiguresContext(world.job)
    entities = [world.job, *world.companies.values(), *world.entities]
    hidden = {
        company
        for company, facts in world.companies.items()
        if not gov.pdp.consider(actor, "read_job_figures", facts, context, entities).allowed
    }
    hidden |= {c for c in world.job.participants if c not in world.companies}
    return FigureScope(frozenset(hidden))
