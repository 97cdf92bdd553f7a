"""Privacy budgets: what a company may still spend for a purpose, and the verdict on a round.

The epsilon cap per company per purpose follows the job's risk tier; the caps are the policy
set's (``policies/tiers.toml``), read from the active set under governance and from the
shipped set otherwise. ``budget_allows`` is the pure decision the coordinator applies as its
own second, fail-closed check after the policy engine's selection. Epsilons of different jobs add up (basic composition); within one job the company's
RDP total is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from policies.policyset import DEFAULT_POLICY_DIR
from policies.tiers import TIERS_FILE, TierConfig, parse_tier_config
from sandbox.privacy.accounting import EPSILON_SLACK


def epsilon_caps(tiers: TierConfig | None = None) -> dict[str, float]:
    """Epsilon a company may spend per purpose, over all jobs, by the job's risk tier."""
    config = tiers if tiers is not None else shipped_tiers()
    return {name: float(params.dp_epsilon_cap) for name, params in config.tiers.items()}


def epsilon_cap(tier: str, tiers: TierConfig | None = None) -> float:
    """The cap for ``tier``; an unknown tier gets the strictest cap (fail closed)."""
    caps = epsilon_caps(tiers)
    return caps.get(tier, min(caps.values()))


@lru_cache(maxsize=1)
def shipped_tiers() -> TierConfig:
    return parse_tier_config((DEFAULT_POLICY_DIR / TIERS_FILE).read_text(encoding="utf-8"))


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
