"""The policy test cases of policies/tests/ (also run by `sandbox policy test`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policies.cases import CaseResult, case_files, load_cases, run_cases
from policies.policyset import LoadedPolicySet

CASES = [case for path in case_files() for case in load_cases(path)]


def test_there_are_case_files_and_cases() -> None:
    assert len(case_files()) >= 6
    assert len(CASES) >= 90


@pytest.mark.parametrize("case", CASES, ids=[f"{c.file}:{c.name}" for c in CASES])
def test_case(policy_set: LoadedPolicySet, case) -> None:
    [result] = run_cases(policy_set, [case])
    decision = result.decision
    assert not decision.errors, decision.errors
    assert decision.allowed == case.expect_allowed, decision.reasons
    assert set(decision.policies) == case.expect_policies, decision.reasons
    assert all("{" not in r for r in decision.reasons), decision.reasons


def test_every_policy_is_exercised_by_a_case(policy_set: LoadedPolicySet) -> None:
    expected = set().union(*(c.expect_policies for c in CASES))
    assert {p.id for p in policy_set.policies} - expected == set()


def test_every_action_is_both_allowed_and_denied_somewhere() -> None:
    allowed = {c.request.action for c in CASES if c.expect_allowed}
    denied = {c.request.action for c in CASES if not c.expect_allowed}
    from policies.engine import ACTIONS

    assert set(ACTIONS) <= allowed
    assert set(ACTIONS) <= denied


def test_a_case_with_the_wrong_expectation_fails(policy_set: LoadedPolicySet, tmp_path: Path):
    source = case_files()[0]
    raw = json.loads(source.read_text())
    raw["facts_from"] = [str(source.parent / name) for name in raw.get("facts_from", [])]
    first = raw["cases"][0]
    first["expect"] = "deny" if first["expect"] == "allow" else "allow"
    raw["cases"] = [first]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    [result] = run_cases(policy_set, load_cases(bad))
    assert isinstance(result, CaseResult)
    assert not result.passed
