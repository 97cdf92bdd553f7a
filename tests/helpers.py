"""Small builders shared by several test modules."""

from __future__ import annotations

from typing import Any

from sandbox.config import Settings
from sandbox.data import census
from sandbox.jobspec import ModelSpec
from sandbox.learning.encoding import FeatureSpec, NumericFeature
from sandbox.onboarding import onboard_company
from sandbox.protocol import TrainingPlan, TrainSettings


def join(settings: Settings, engine, industries: list[str], rows: int = 300) -> list[str]:  # type: ignore[no-untyped-def]
    """One census company per industry (``rows`` sampled rows each), consenting to
    income prediction; returns the company ids."""
    ids = []
    for industry in industries:
        company = census.slug(industry)
        onboard_company(
            engine,
            settings.company_dir(company),
            company,
            industry,
            census.company_table(industry, rows=rows, seed=1),
            purposes=("income-prediction",),
        )
        ids.append(company)
    return ids


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
