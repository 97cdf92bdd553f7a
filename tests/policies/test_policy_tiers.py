"""Risk tiers from tiers.toml: classification in Python, the numbers handed to Cedar."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from policies.engine import MemoryRecorder, PolicyDecisionPoint
from policies.policyset import LoadedPolicySet
from policies.tiers import (
    TierConfigError,
    parse_tier_config,
    risk_tier,
    shipped_tier_config,
)

from .conftest import NOW, World

CENSUS_INDUSTRIES = {
    "Agriculture", "Armed Forces", "Business and repair services", "Communications",
    "Construction", "Education", "Entertainment", "Finance insurance and real estate",
    "Forestry and fisheries", "Hospital services", "Manufacturing-durable goods",
    "Manufacturing-nondurable goods", "Medical except hospital", "Mining",
    "Other professional services", "Personal services except private HH",
    "Private household services", "Public administration", "Retail trade", "Social services",
    "Transportation", "Utilities and sanitary services", "Wholesale trade",
}  # fmt: skip


def test_every_census_industry_is_classified() -> None:
    assert shipped_tier_config().industries == CENSUS_INDUSTRIES


@pytest.mark.parametrize(
    ("industries", "grades", "tier"),
    [
        (["Hospital services"], ["general"], "high"),
        (["Medical except hospital"], ["general"], "high"),
        (["Finance insurance and real estate"], ["general"], "high"),
        (["Education"], ["general"], "medium"),
        (["Retail trade", "Mining"], ["general"], "low"),
        (["Retail trade", "Hospital services"], ["general"], "high"),
        (["Retail trade"], ["general", "important"], "medium"),
        (["Retail trade"], ["core"], "high"),
        (["Space tourism"], ["general"], "high"),
        ([], [], "low"),
    ],
)
def test_risk_tier(industries: list[str], grades: list[str], tier: str) -> None:
    assert risk_tier(industries, grades) == tier


def test_an_unknown_grade_is_an_error_not_a_guess() -> None:
    with pytest.raises(ValueError, match="unknown data grade"):
        risk_tier(["Retail trade"], ["secret"])


def test_tier_parameters_are_read_from_the_file() -> None:
    tiers = shipped_tier_config().tiers
    assert tiers["high"].min_participants == 3
    assert str(tiers["high"].dp_epsilon_cap) == "3.0"
    assert tiers["low"].release_max_worst_company_gap > tiers["high"].release_max_worst_company_gap


def test_the_tier_rules_read_their_numbers_from_the_file(policy_copy: Path, world: World):
    """Change high's minimum in tiers.toml only: a two-hospital job is then admitted."""
    two = replace(world.job, participants=("h1", "h2"), datasets=("d-h1", "d-h2"))
    before = PolicyDecisionPoint(
        LoadedPolicySet.from_dir(policy_copy), MemoryRecorder(), clock=lambda: NOW
    )
    assert not before.decide(world.engineer, "submit_job", two, None, world.facts()).allowed
    toml = policy_copy / "tiers.toml"
    text = toml.read_text()
    high = text.index("[tiers.high]")
    toml.write_text(
        text[:high] + text[high:].replace("min_participants = 3", "min_participants = 2", 1)
    )
    after = PolicyDecisionPoint(
        LoadedPolicySet.from_dir(policy_copy), MemoryRecorder(), clock=lambda: NOW
    )
    assert after.decide(world.engineer, "submit_job", two, None, world.facts()).allowed


def _shipped_text() -> str:
    return (Path("policies") / "tiers.toml").read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.replace("version = 1", "version = 2"), "version"),
        (lambda t: t.replace('core = "high"', 'core = "extreme"'), "unknown tier"),
        (lambda t: t.replace('core = "high"\n', ""), "exactly"),
        (lambda t: t.replace('dp_epsilon_cap = "3.0"', 'dp_epsilon_cap = "3.00001"'), "four"),
        (lambda t: t.replace("min_participants = 3", "min_participants = 0"), "positive"),
        (lambda t: t.replace('    "Mining",\n', '    "Mining",\n    "Education",\n'), "twice"),
        (lambda t: t.replace("[tiers.medium]", "[tiers.middle]"), "one table per tier"),
        (lambda t: t.replace("witness_quorum = 2", "witness_quorum = 0"), "witness_quorum"),
        (lambda t: t.replace("witness_quorum = 2", 'witness_quorum = "2"'), "witness_quorum"),
        (lambda t: t.replace("witness_quorum = 2", "witness_quorum = true"), "witness_quorum"),
        (lambda t: t.replace("[ledger]\nwitness_quorum = 2\n", ""), "[ledger]"),
        (lambda t: t.replace('currency = "EUR"', 'currency = "euro"'), "three-letter code"),
        (lambda t: t.replace('cpu_hour = "0.05"', 'cpu_hour = "-1"'), "cpu_hour must be"),
        (lambda t: t.replace('gigabyte = "0.01"', 'gigabyte = "lots"'), "gigabyte is not"),
        (lambda t: t.replace('task = "0.01"', 'task = "NaN"'), "task must be"),
        (
            lambda t: t.replace("small_company_rows = 1000", "small_company_rows = 0"),
            "small_company_rows",
        ),
        (lambda t: t.replace("small_company_rows = 1000\n", ""), "must hold exactly"),
        (lambda t: t + "\n[[oops", "not valid TOML"),
    ],
)
def test_a_malformed_tiers_file_is_refused(change, message: str) -> None:
    with pytest.raises(TierConfigError, match=message):
        parse_tier_config(change(_shipped_text()))
