"""The company's own accountant: the source of truth for what its data has spent.

Privacy. Every DP release a node makes (a round's training, the local-only baseline) is a
*run*, written to the node's folder per dataset before its result leaves, with the job and
purpose it served. Before a run the node checks three budgets, each an RDP composition of the
runs it covers: the job's epsilon (from the warrant's spec), the purpose's cap (the job's
tier in the node's own policy set) over every job of that purpose, and the dataset's cap over
every purpose (``dataset_epsilon_cap`` in ``tiers.toml``). A run that would pass any of them
is refused. The coordinator's figures mirror these; each receipt carries the node's totals.

Scoring. A node scores at most the models its warrant's spec needs (``scoring_allowance``):
each scoring task is counted, per job and kind, before it runs.

Both files are locked for the whole check-run-record sequence, so two tasks of one node
cannot both spend the last of a budget.
"""

from __future__ import annotations

import fcntl
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from clients.mandate import Mandate, Refusal
from sandbox.files import write_json_atomic
from sandbox.node.home import NodeHome
from sandbox.privacy.accounting import EPSILON_SLACK, DpSchedule, Run, composed_epsilon
from sandbox.utc import utcnow
from sandbox.vocabulary import is_id, is_job_id

RunKind = Literal["train", "baseline"]


@dataclass(frozen=True)
class PrivacyReport:
    """What one run cost and where the node's budgets stand after it (its reply and its
    receipt state these)."""

    epsilon: float
    epsilon_job: float
    epsilon_purpose: float
    epsilon_dataset: float
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


@contextmanager
def _locked(path: Path, empty: dict[str, Any]) -> Iterator[dict[str, Any]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield json.loads(path.read_text(encoding="utf-8")) if path.exists() else empty
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def privacy_path(node: NodeHome, dataset: str) -> Path:
    if not is_id(dataset):
        raise ValueError(f"dataset name {dataset!r} is not an id")
    return node.folder / "privacy" / f"{dataset}.json"


def _run(entry: dict[str, Any]) -> Run:
    return Run(float(entry["noise_multiplier"]), float(entry["sample_rate"]), int(entry["steps"]))


class PrivacyAccount:
    """The runs made on one dataset (open it with :meth:`locked`)."""

    def __init__(self, path: Path, document: dict[str, Any]) -> None:
        self.path = path
        self.document = document

    @classmethod
    @contextmanager
    def locked(cls, node: NodeHome, dataset: str) -> Iterator[PrivacyAccount]:
        path = privacy_path(node, dataset)
        with _locked(path, {"dataset": dataset, "runs": [], "terms": {}}) as document:
            yield cls(path, document)

    def runs(self, *, job: str | None = None, purpose: str | None = None) -> list[Run]:
        return [
            _run(r)
            for r in self.document["runs"]
            if (job is None or r["job"] == job) and (purpose is None or r["purpose"] == purpose)
        ]

    def totals(self, mandate: Mandate, delta: float, extra: Run | None = None) -> dict[str, float]:
        """The job's, the purpose's and the dataset's epsilon at ``delta`` (with ``extra``)."""
        more = [extra] if extra is not None else []
        job, purpose = mandate.job_id, mandate.spec.purpose
        return {
            "job": composed_epsilon([*self.runs(job=job), *more], delta),
            "purpose": composed_epsilon([*self.runs(purpose=purpose), *more], delta),
            "dataset": composed_epsilon([*self.runs(), *more], delta),
        }

    def check(
        self, mandate: Mandate, schedule: DpSchedule, run: Run, caps: dict[str, float]
    ) -> None:
        """Refuse a run that would take any budget past its cap (or change a job's terms)."""
        terms = self.document["terms"].get(mandate.job_id)
        current = {
            "epsilon": schedule.target_epsilon,
            "delta": schedule.delta,
            "purpose": mandate.spec.purpose,
        }
        if terms is not None and terms != current:
            raise Refusal(
                "privacy-terms",
                f"job {mandate.job_id} asks for privacy terms {current}, but this node's "
                f"earlier runs for it were made under {terms}",
            )
        after = self.totals(mandate, schedule.delta, run)
        limits = {"job": schedule.target_epsilon, **caps}
        for scope in ("job", "purpose", "dataset"):
            if not math.isfinite(after[scope]) or after[scope] > limits[scope] + EPSILON_SLACK:
                raise Refusal(
                    "privacy-budget",
                    f"another run for job {mandate.job_id} would bring this company's epsilon "
                    f"for the {scope} to {after[scope]:.4f}, beyond its {limits[scope]:g}",
                )

    def record(
        self, mandate: Mandate, schedule: DpSchedule, run: Run, kind: RunKind, round_number: int
    ) -> PrivacyReport:
        """Write the run down (before its result leaves) and say what it cost."""
        before = self.totals(mandate, schedule.delta)
        after = self.totals(mandate, schedule.delta, run)
        self.document["terms"][mandate.job_id] = {
            "epsilon": schedule.target_epsilon,
            "delta": schedule.delta,
            "purpose": mandate.spec.purpose,
        }
        self.document["runs"].append(
            {
                "job": mandate.job_id,
                "purpose": mandate.spec.purpose,
                "kind": kind,
                "round": round_number,
                "noise_multiplier": run.noise_multiplier,
                "sample_rate": run.sample_rate,
                "steps": run.steps,
                "delta": schedule.delta,
                "epsilon_job": after["job"],
                "warrant": mandate.warrant_hash,
                "at": utcnow().isoformat(),
            }
        )
        write_json_atomic(self.path, self.document)
        return PrivacyReport(
            epsilon=after["job"] - before["job"],
            epsilon_job=after["job"],
            epsilon_purpose=after["purpose"],
            epsilon_dataset=after["dataset"],
            delta=schedule.delta,
            noise_multiplier=run.noise_multiplier,
            sample_rate=run.sample_rate,
            steps=run.steps,
        )


# ---------------------------------------------------------------------------------- scoring
def scoring_path(node: NodeHome, job_id: str) -> Path:
    if not is_job_id(job_id):
        raise ValueError(f"job id {job_id!r} is not a job id")
    return node.folder / "scoring" / f"{job_id}.json"


@contextmanager
def scoring_slot(node: NodeHome, mandate: Mandate, task: str, models: int) -> Iterator[None]:
    """Count ``models`` scored for ``task`` of the mandate's job, refusing beyond its
    allowance; the count is written before the scores leave, and stays if scoring fails
    (a model that was scored was a use of the data)."""
    allowance = mandate.allowance(task)
    if allowance is None:
        yield
        return
    path = scoring_path(node, mandate.job_id)
    with _locked(path, {"job": mandate.job_id, "scored": {}}) as document:
        done = int(document["scored"].get(task, 0))
        if done + models > allowance:
            raise Refusal(
                "scoring",
                f"job {mandate.job_id}'s filed spec lets this node score {allowance} models "
                f"for {task}; {done} were scored and this task asks for {models} more",
            )
        document["scored"][task] = done + models
        write_json_atomic(path, document)
        yield
