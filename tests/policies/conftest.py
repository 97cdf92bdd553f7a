"""Fixtures of the policy tests: the shipped policy set, a decision point with an in-memory
recorder and a fixed clock, and a small world of facts."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from policies.engine import MemoryRecorder, PolicyDecisionPoint
from policies.facts import (
    CompanyFacts,
    ConsentFacts,
    DatasetFacts,
    EngineerFacts,
    JobFacts,
    RegulatorFacts,
)
from policies.policyset import DEFAULT_POLICY_DIR, LoadedPolicySet

NOW = datetime(2026, 6, 1, tzinfo=UTC)
LATER = datetime(2027, 1, 1, tzinfo=UTC)
EARLIER = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="session")
def policy_set() -> LoadedPolicySet:
    return LoadedPolicySet.from_dir()


@pytest.fixture
def recorder() -> MemoryRecorder:
    return MemoryRecorder()


@pytest.fixture
def pdp(policy_set: LoadedPolicySet, recorder: MemoryRecorder) -> PolicyDecisionPoint:
    return PolicyDecisionPoint(policy_set, recorder, clock=lambda: NOW)


@pytest.fixture
def policy_copy(tmp_path: Path) -> Path:
    """A copy of the shipped policy set's files, to change."""
    target = tmp_path / "policy-set"
    target.mkdir()
    for path in DEFAULT_POLICY_DIR.iterdir():
        if path.is_file() and path.suffix in (".cedar", ".cedarschema", ".toml"):
            shutil.copy(path, target / path.name)
    return target


@dataclass
class World:
    """Three hospitals with personal data, consenting to "readmission" until 2027, and a
    high-risk job over their datasets with secure aggregation and epsilon 2."""

    engineer: EngineerFacts
    regulator: RegulatorFacts
    companies: dict[str, CompanyFacts]
    datasets: dict[str, DatasetFacts]
    consents: dict[str, ConsentFacts]
    job: JobFacts

    def facts(self, *, without: tuple[str, ...] = (), extra: tuple = ()) -> list:
        """Datasets and consents, leaving out the consents named in ``without``."""
        consents = [c for k, c in self.consents.items() if k not in without]
        return [*self.datasets.values(), *consents, *extra]


@pytest.fixture
def world() -> World:
    names = ("h1", "h2", "h3")
    companies = {c: CompanyFacts(c, "Hospital services") for c in names}
    datasets = {c: DatasetFacts(f"d-{c}", c, "Hospital services", "general", True) for c in names}
    consents = {c: ConsentFacts(f"k-{c}", c, f"d-{c}", "readmission", LATER) for c in names}
    job = JobFacts(
        id="job-1",
        engineer="eve",
        purpose="readmission",
        participants=names,
        datasets=tuple(d.id for d in datasets.values()),
        secure_aggregation=True,
        dp_epsilon=Decimal("2.0"),
    )
    return World(EngineerFacts("eve"), RegulatorFacts("reg"), companies, datasets, consents, job)
