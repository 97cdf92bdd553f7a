"""The release: who decides, the verdict with the checks that decided it, the export of an
allowed model with its model card, and where the decision is recorded.

The decision is the policy engine's (``release_model``, see
``coordinator.governed.PolicyGate``): Cedar alone decides, and the checks shown to people
(the CLI, the console, the report, the model card) are the policies' own diagnostics (each
``@check`` policy of ``release.cedar`` with its figure, its limit and its words). Two seams
keep the runner apart from it:

- ``ReleaseGate.decide(job_id, tier, assessment)``: who decides;
- ``ReleaseRecorder.record(outcome)``: where the decision is recorded (the registry's
  ``Release`` table, and under governance the ledger too).

An allowed model is exported to ``runs/<job>/release/`` with its model card (Markdown and
JSON). A denied one stays where training left it (``runs/<job>/model.npz``) and nothing is
exported; the decision with its reasons is recorded either way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from coordinator.assessment import Assessment
from sandbox.protocol.jobspec import JobSpec
from sandbox.protocol.messages import TrainingPlan
from sandbox.registry.models import Dataset, Job, Release
from sandbox.reports.model_card import export_release, model_card, withdraw_release
from sandbox.services import runs
from sandbox.services.releases import Check, ReleaseVerdict

__all__ = ["Check", "ReleaseVerdict", "conclude_release"]


class ReleaseGate(Protocol):
    """Who decides a release: the policy engine's ``release_model`` (``PolicyGate``)."""

    def decide(self, job_id: str, tier: str, assessment: Assessment) -> ReleaseVerdict: ...


@dataclass(frozen=True)
class ReleaseOutcome:
    job_id: str
    model_hash: str
    verdict: ReleaseVerdict
    assessment: Assessment
    contributions: dict[str, Any] | None
    exported_to: Path | None = None
    card: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "allowed": self.verdict.allowed,
            "outcome": self.verdict.outcome,
            "tier": self.verdict.tier,
            "reasons": self.verdict.reasons,
            "decided_by": self.verdict.decided_by,
            "checks": [asdict(c) for c in self.verdict.checks],
            "model_hash": self.model_hash,
            "exported_to": str(self.exported_to) if self.exported_to else None,
        }


class ReleaseRecorder(Protocol):
    """Where a release decision is recorded. A ledger recorder can take (or share) this place."""

    def record(self, outcome: ReleaseOutcome) -> None: ...


class RegistryRecorder:
    """The default: one row in the registry's ``Release`` table per decision."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def record(self, outcome: ReleaseOutcome) -> None:
        runs.store_release(
            self.engine,
            Release(
                job_id=outcome.job_id,
                model_hash=outcome.model_hash,
                tier=outcome.verdict.tier,
                allowed=outcome.verdict.allowed,
                outcome=outcome.verdict.outcome,
                reasons=outcome.verdict.reasons,
                decided_by=outcome.verdict.decided_by,
                assessment=json.loads(json.dumps(outcome.assessment.to_json())),
                contributions=outcome.contributions,
                exported_to=str(outcome.exported_to) if outcome.exported_to else None,
            ),
        )


def conclude_release(
    *,
    job: Job,
    spec: JobSpec,
    plan: TrainingPlan,
    datasets: Sequence[Dataset],
    run_dir: Path,
    model_hash: str,
    rounds_completed: int,
    assessment: Assessment,
    verdict: ReleaseVerdict,
    contributions: dict[str, Any] | None,
    privacy: Mapping[str, Any],
    recorder: ReleaseRecorder,
) -> ReleaseOutcome:
    """Write the model card, export the model (``run_dir/model.npz``) with it on allow,
    export nothing on deny, and record the decision either way. The card is also kept in
    the run folder (``release-assessment.json``), exported or not."""
    card = model_card(
        job=job,
        spec=spec,
        plan=plan,
        datasets=datasets,
        model_hash=model_hash,
        rounds_completed=rounds_completed,
        assessment=assessment.to_json(),
        verdict=verdict.to_json(),
        contributions=contributions,
        privacy=privacy,
    )
    (run_dir / "release-assessment.json").write_text(json.dumps(card, indent=2) + "\n")
    exported = None
    if verdict.allowed:
        exported = export_release(run_dir, run_dir / "model.npz", card)
    else:
        withdraw_release(run_dir)
    outcome = ReleaseOutcome(
        job_id=job.id,
        model_hash=model_hash,
        verdict=verdict,
        assessment=assessment,
        contributions=contributions,
        exported_to=exported,
        card=card,
    )
    recorder.record(outcome)
    return outcome
