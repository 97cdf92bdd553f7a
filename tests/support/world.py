"""Small builders shared by several test modules: companies that join, jobs that are filed,
approved where the policy asks and run, all through the sandbox's services."""

from __future__ import annotations

from typing import Any

from policies.facts import EngineerFacts, RegulatorFacts
from sandbox.config import Settings
from sandbox.data import census
from sandbox.governance import get_governance
from sandbox.learning.encoding import FeatureSpec, NumericFeature
from sandbox.protocol.jobspec import JobSpec, ModelSpec
from sandbox.protocol.messages import TrainingPlan, TrainSettings
from sandbox.registry.models import Job
from sandbox.runtime import bare
from sandbox.services import companies, jobs
from sandbox.services.bare import file_unreviewed

ENGINEER = EngineerFacts("eve")
REGULATOR = RegulatorFacts("reg-anna")


def join(settings: Settings, engine: Any, industries: list[str], rows: int = 300) -> list[str]:
    """One census company per industry (``rows`` sampled rows each), consenting to
    income prediction; returns the company ids."""
    gov = get_governance(settings)
    ids = []
    for industry in industries:
        company = census.slug(industry)
        companies.join(
            gov,
            settings.company_dir(company),
            company,
            industry,
            census.company_table(industry, rows=rows, seed=1),
            purposes=("income-prediction",),
        )
        ids.append(company)
    return ids


def file_runnable(
    settings: Settings, spec: JobSpec | dict[str, Any], engineer: Any = ENGINEER
) -> Job:
    """File a job as ``engineer`` and, where the policy asks for it, approve it as a
    regulator: a job ready to start. Fails the test if the job is not admitted."""
    gov = get_governance(settings)
    spec = spec if isinstance(spec, JobSpec) else JobSpec.model_validate(spec)
    filed = jobs.file_job(gov, spec, engineer)
    assert filed.allowed, filed.reasons
    if filed.approval_by:
        return jobs.approve_as_installation_regulator(gov, filed.job.id, "approved for the test")
    return filed.job


def tiny_plan(**changes: Any) -> TrainingPlan:
    """A training plan over one numeric column, for checks that never train."""
    plan = TrainingPlan(
        job_id="job-a",
        purpose="income-prediction",
        engineer="eve",
        dataset="census",
        model=ModelSpec(),
        encoding=FeatureSpec(target="y", numeric=(NumericFeature(name="x"),), categorical=()),
        train=TrainSettings(
            epochs=1,
            learning_rate=1.0,
            batch_size=64,
            optimizer="sgd",
            weight_decay=0.0,
            proximal_mu=0.0,
            seed=0,
        ),
    )
    return plan.model_copy(update=changes)


def file_bare(engine: Any, spec: JobSpec | dict[str, Any]) -> str:
    """A job filed without governance (the benchmarks' bare arm): for tests that drill the
    learning and privacy mechanisms themselves."""
    spec = spec if isinstance(spec, JobSpec) else JobSpec.model_validate(spec)
    return file_unreviewed(engine, spec, "engineer").id


def run_bare(settings: Settings, job_ids: list[str], **options: Any) -> dict[str, Any]:
    """Run jobs filed bare on the simulation engine without governance; each job's outcome."""
    return bare.run_bare(settings, job_ids, **options)


HELD_MODEL_HASH = "ab" * 32
THIN_EVIDENCE = {"worst_company_gap": 0.08, "worst_company_gap_low": -0.02,
                 "worst_company_gap_high": 0.18, "calibration_error": 0.02}  # fmt: skip
"""An assessment whose gap interval straddles the high tier's limit of 0.05."""


def hold_for_review(engine: Any, job_id: str, assessment: dict[str, Any] | None = None) -> None:
    """Record a release decision that holds the job's model for a regulator's review."""
    from sandbox.registry import jobs as job_store
    from sandbox.registry.models import Release

    job_store.add_release(engine, Release(
        job_id=job_id, model_hash=HELD_MODEL_HASH, tier="high", allowed=False,
        outcome="insufficient-evidence", reasons=["held"], decided_by="policy set x",
        assessment=assessment if assessment is not None else THIN_EVIDENCE,
    ))  # fmt: skip
