"""Choosing who takes part in a round, by policy.

Before each round the coordinator asks, for every company still in the job,
``participate_in_round``. A company that is denied (its consent was revoked or expired, its
privacy budget is spent, it was suspended) leaves the job. Whether the job can go on depends
on how many remain, and the policies decide that too (``admission.min_participants`` reads the
job's participant count), so the question is asked again with the smaller job until the
answer is stable: either every remaining company is allowed, and the round goes on with them,
or every one is denied, and the job stops. Each pass asks one question per company, and every
answer is recorded by the decision point.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from policies.engine import Decision, PolicyDecisionPoint
from policies.facts import CompanyFacts, DatasetFacts, JobFacts, RoundContext


@dataclass(frozen=True)
class RoundSelection:
    """The outcome of choosing a round's participants.

    ``selected``: the companies that take part (empty when the job stops). ``removed``: each
    company that left, with the decision that removed it. ``job``: the job's facts with the
    remaining participants and only their datasets. ``decisions``: every decision asked, in
    order.
    """

    selected: tuple[str, ...]
    removed: Mapping[str, Decision]
    stopped: bool
    job: JobFacts
    decisions: tuple[Decision, ...]

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why the job stopped (the reasons of the last denials), or empty."""
        if not self.stopped or not self.decisions:
            return ()
        return self.decisions[-1].reasons


def select_participants(
    pdp: PolicyDecisionPoint,
    job: JobFacts,
    companies: Mapping[str, CompanyFacts],
    contexts: Mapping[str, RoundContext],
    entities: Iterable[object] = (),
) -> RoundSelection:
    """Ask ``participate_in_round`` for each participant of ``job`` until the answer is stable.

    ``companies`` and ``contexts`` are keyed by company id and must cover every participant;
    ``entities`` are the job's datasets and consents.
    """
    facts = list(entities)
    dataset_owner = {f.id: f.company for f in facts if isinstance(f, DatasetFacts)}
    removed: dict[str, Decision] = {}
    decisions: list[Decision] = []
    current = job
    while True:
        answers = {
            c: pdp.decide(companies[c], "participate_in_round", current, contexts[c], facts)
            for c in current.participants
        }
        decisions += answers.values()
        denied = [c for c, d in answers.items() if not d.allowed]
        if not denied:
            return RoundSelection(current.participants, removed, False, current, tuple(decisions))
        if len(denied) == len(answers):
            for c in denied:
                removed[c] = answers[c]
            stopped = dataclasses.replace(current, participants=(), datasets=())
            return RoundSelection((), removed, True, stopped, tuple(decisions))
        for c in denied:
            removed[c] = answers[c]
        keep = tuple(c for c in current.participants if c not in denied)
        current = dataclasses.replace(
            current,
            participants=keep,
            datasets=tuple(d for d in current.datasets if dataset_owner.get(d) in keep),
        )
