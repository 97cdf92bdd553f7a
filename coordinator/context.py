"""What every step of a run shares: the job, its folder, the messenger, the governor, and the
state that grows as the run goes (the plan, each company's training rows, the privacy
bookkeeping of a DP job)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from flwr.app import Context
from sqlalchemy.engine import Engine

from coordinator.contribution import ContributionSettings, UpdateStore
from coordinator.governor import Governor
from coordinator.messaging import Exchange, Messenger
from coordinator.persistence import RunFolder
from coordinator.privacy import JobPrivacy
from sandbox.config import Settings
from sandbox.learning.encoding import FeatureSpec
from sandbox.learning.robustness import RobustnessSettings
from sandbox.protocol.jobspec import JobSpec
from sandbox.protocol.messages import TrainingPlan, plan_from_spec
from sandbox.protocol.warrant import Warrant
from sandbox.registry.models import Job


class JobStopped(RuntimeError):
    """The job cannot go on (too few participants, no nodes); the reason is recorded."""


@dataclass
class RunContext:
    settings: Settings
    engine: Engine
    job: Job
    spec: JobSpec
    folder: RunFolder
    messenger: Messenger
    governor: Governor
    robustness: RobustnessSettings
    contribution: ContributionSettings
    updates: UpdateStore
    strategy: Any
    flower_context: Context | None = None
    plan: TrainingPlan | None = None
    rows: dict[str, int] = field(default_factory=dict)
    privacy: JobPrivacy | None = None

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def warrant(self) -> Warrant | None:
        """The job's signed warrant (every task carries it to the companies' nodes)."""
        return Warrant.parse(self.job.warrant) if self.job.warrant is not None else None

    def participants(self) -> list[str]:
        """Companies asked to take part in the next step: the job's companies whose node
        proved its identity."""
        return [c for c in self.spec.companies if c in self.messenger.nodes]

    @property
    def minimum(self) -> int:
        """How many companies a step needs: the spec's minimum, or the one the policy decided
        for the job's tier (its warrant's rules) when that is higher."""
        warrant = self.warrant
        decided = warrant.rules.min_participants if warrant is not None else 0
        return max(self.spec.min_participants, decided)

    def require(self, accepted: Collection[str], what: str, exchange: Exchange) -> None:
        if len(accepted) < self.minimum:
            reasons = {**exchange.missing, **exchange.rejected}
            detail = "; ".join(f"{c}: {r}" for c, r in sorted(reasons.items()))
            raise JobStopped(
                f"{what}: {len(accepted)} companies took part, fewer than the minimum "
                f"{self.minimum}" + (f" ({detail})" if detail else "")
            )

    def base_plan(self, encoding: FeatureSpec, threshold: float = 0.5) -> TrainingPlan:
        return plan_from_spec(
            self.spec,
            self.job_id,
            self.job.filed_by,
            self.job.bundle_hash,
            self.warrant.digest() if self.warrant is not None else None,
            encoding,
            threshold,
        )
