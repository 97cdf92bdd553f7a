"""Privacy budgets: what a company may still spend for a purpose, and the verdict on a round.

The epsilon cap per company per purpose follows the job's risk tier. The caps live here, in
one table (the same numbers as the policy engine's tier data, which takes them over); ``budget_allows`` is the pure
decision the coordinator's participant selection applies (or hands to the policy engine as
facts). Epsilons of different jobs add up (basic composition); within one job the company's
RDP total is used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sandbox.privacy.accounting import EPSILON_SLACK

# Epsilon a company may spend per purpose, over all jobs, by the job's risk tier.
EPSILON_CAPS: dict[str, float] = {"low": 10.0, "medium": 5.0, "high": 3.0}


def epsilon_cap(tier: str) -> float:
    """The cap for ``tier``; an unknown tier gets the strictest cap (fail closed)."""
    return EPSILON_CAPS.get(tier, min(EPSILON_CAPS.values()))


def budget_allows(spent: float, next_epsilon: float, cap: float) -> tuple[bool, str]:
    """Whether spending ``next_epsilon`` on top of ``spent`` stays within ``cap``, and why."""
    after = spent + next_epsilon
    if after <= cap + EPSILON_SLACK:
        return (
            True,
            f"spent {spent:.4f} + next round {next_epsilon:.4f} = {after:.4f} <= cap {cap:g}",
        )
    return False, (
        f"spent {spent:.4f} + next round {next_epsilon:.4f} = {after:.4f} would exceed cap {cap:g}"
    )


@dataclass(frozen=True)
class BudgetFacts:
    """Everything a budget decision about one company in one round rests on."""

    company: str
    purpose: str
    job_id: str
    round: int
    spent_purpose: float  # over every job of this purpose, this job's runs so far included
    spent_job: float  # this job's runs so far
    runs_done: int  # training runs this company was asked for in this job
    next_epsilon: float  # what the next run costs
    purpose_cap: float  # the tier's cap per company per purpose
    job_epsilon: float  # the job's own total budget per company
    delta: float

    @property
    def epsilon_after(self) -> float:
        """The company's spend for the purpose if it takes part in the round."""
        return self.spent_purpose + self.next_epsilon

    def decide(self) -> tuple[bool, str]:
        """Both budgets must allow the next round; the reason names the one that does not."""
        ok, why = budget_allows(self.spent_purpose, self.next_epsilon, self.purpose_cap)
        if not ok:
            return False, f"privacy budget for purpose {self.purpose!r}: {why}"
        ok, why_job = budget_allows(self.spent_job, self.next_epsilon, self.job_epsilon)
        if not ok:
            return False, f"privacy budget of job {self.job_id}: {why_job}"
        return True, f"purpose {self.purpose!r}: {why}; job: {why_job}"

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)
