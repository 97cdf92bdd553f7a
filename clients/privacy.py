"""The company's own DP accountant: every training run it made for a job, kept in its node
folder, so that a restarted node (or a round re-sent by a restarted coordinator) is paid for.

Before a run the company checks that the run keeps its total for the job within the job's
epsilon and refuses otherwise; after the run, and before the update leaves, the run is
written down. The file is locked for the whole check-train-record sequence.
"""

from __future__ import annotations

import fcntl
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sandbox.files import write_json_atomic
from sandbox.node.home import NodeHome
from sandbox.privacy.accounting import (
    EPSILON_SLACK,
    DpSchedule,
    PrivacyBudgetExceeded,
    Run,
    composed_epsilon,
)
from sandbox.utc import utcnow


@dataclass(frozen=True)
class PrivacyReport:
    """What one run cost, as the company states it in its train reply (and receipt)."""

    epsilon: float
    epsilon_job: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int

    def as_metrics(self) -> dict[str, float]:
        return {
            "epsilon": self.epsilon,
            "epsilon-job": self.epsilon_job,
            "delta": self.delta,
            "noise-multiplier": self.noise_multiplier,
            "sample-rate": self.sample_rate,
            "steps": float(self.steps),
        }


class RunLog:
    """The runs of one job at one company (open it with ``RunLog.locked``)."""

    def __init__(self, node: NodeHome, job_id: str, document: dict[str, Any]):
        self.path = node.privacy_path(job_id)
        self.job_id = job_id
        self.document = document

    @classmethod
    @contextmanager
    def locked(cls, node: NodeHome, job_id: str) -> Iterator[RunLog]:
        path = node.privacy_path(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                document = (
                    json.loads(path.read_text(encoding="utf-8"))
                    if path.exists()
                    else {"job_id": job_id, "runs": []}
                )
                yield cls(node, job_id, document)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @property
    def runs(self) -> list[Run]:
        return [
            Run(float(r["noise_multiplier"]), float(r["sample_rate"]), int(r["steps"]))
            for r in self.document["runs"]
        ]

    def _terms_match(self, schedule: DpSchedule) -> None:
        """A job's delta and epsilon are fixed; if they differ from earlier runs, refuse."""
        terms = self.document.get("terms")
        current = {"epsilon": schedule.target_epsilon, "delta": schedule.delta}
        if terms is not None and terms != current:
            raise PrivacyBudgetExceeded(
                f"job {self.job_id} asks for privacy terms {current}, but earlier runs were "
                f"made under {terms}"
            )

    def spent(self, delta: float) -> float:
        return composed_epsilon(self.runs, delta)

    def check_next(self, schedule: DpSchedule) -> None:
        """Refuse a run that would take this job's total beyond its epsilon."""
        self._terms_match(schedule)
        after = composed_epsilon([*self.runs, schedule.run], schedule.delta)
        if after > schedule.target_epsilon + EPSILON_SLACK:
            raise PrivacyBudgetExceeded(
                f"another training run for job {self.job_id} would bring this company's epsilon "
                f"to {after:.4f}, beyond the job's {schedule.target_epsilon:g} "
                f"({len(self.runs)} runs made)"
            )

    def record(self, round_number: int, schedule: DpSchedule, run: Run) -> PrivacyReport:
        """Write the run down (before its update leaves) and say what it cost."""
        self._terms_match(schedule)
        before = self.spent(schedule.delta)
        after = composed_epsilon([*self.runs, run], schedule.delta)
        if not math.isfinite(after):
            raise PrivacyBudgetExceeded("the run's epsilon is not finite")
        self.document["terms"] = {"epsilon": schedule.target_epsilon, "delta": schedule.delta}
        self.document["runs"].append(
            {
                "round": round_number,
                "noise_multiplier": run.noise_multiplier,
                "sample_rate": run.sample_rate,
                "steps": run.steps,
                "epsilon_job": after,
                "at": utcnow().isoformat(),
            }
        )
        write_json_atomic(self.path, self.document)
        return PrivacyReport(
            epsilon=after - before,
            epsilon_job=after,
            delta=schedule.delta,
            noise_multiplier=run.noise_multiplier,
            sample_rate=run.sample_rate,
            steps=run.steps,
        )
