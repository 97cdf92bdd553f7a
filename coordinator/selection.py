"""Who takes part in a round: the selector hook.

Before every round the coordinator gathers the facts a decision needs (for a DP job, each
candidate's privacy budget) and asks the job's selector. The default selector applies the
budget rule itself; the policy engine plugs in here with a selector that puts the same facts
to its policies. Whatever the selector answers, a company it did not name does not take part,
and every company left out is recorded with the selector's reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from sandbox.privacy.budget import BudgetFacts


@dataclass(frozen=True)
class SelectionRequest:
    job_id: str
    purpose: str
    risk_tier: str
    round: int
    candidates: tuple[str, ...]
    dp: bool
    # Budget facts per candidate; for a DP job a candidate without facts cannot be selected.
    budgets: Mapping[str, BudgetFacts] = field(default_factory=dict)


@dataclass(frozen=True)
class Selection:
    selected: tuple[str, ...]
    sat_out: Mapping[str, str] = field(default_factory=dict)


class ParticipantSelector(Protocol):
    def __call__(self, request: SelectionRequest) -> Selection: ...


def budget_selector(request: SelectionRequest) -> Selection:
    """Everyone, except (in a DP job) a company whose next round its budgets do not allow."""
    if not request.dp:
        return Selection(selected=request.candidates)
    selected: list[str] = []
    sat_out: dict[str, str] = {}
    for company in request.candidates:
        facts = request.budgets.get(company)
        if facts is None:
            sat_out[company] = "no privacy budget facts for this company"
            continue
        allowed, reason = facts.decide()
        if allowed:
            selected.append(company)
        else:
            sat_out[company] = reason
    return Selection(selected=tuple(selected), sat_out=sat_out)


def apply_selection(request: SelectionRequest, selection: Selection) -> Selection:
    """Hold a selector to its request: only candidates can be selected, each at most once,
    and every candidate left out has a reason on record."""
    chosen = [c for c in dict.fromkeys(selection.selected) if c in request.candidates]
    sat_out = {
        c: selection.sat_out.get(c, "not selected for this round")
        for c in request.candidates
        if c not in chosen
    }
    return Selection(selected=tuple(chosen), sat_out=sat_out)
