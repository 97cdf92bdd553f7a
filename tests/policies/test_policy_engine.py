"""The decision point: the Decision it returns, and failing closed."""

from __future__ import annotations

import json
import uuid
from datetime import UTC
from decimal import Decimal
from pathlib import Path

import pytest

from policies.engine import MemoryRecorder, PolicyDecisionPoint
from policies.facts import (
    AuditLogFacts,
    AuditScope,
    CompanyFacts,
    ConsentFacts,
    DatasetFacts,
    RoundContext,
)
from policies.policyset import LoadedPolicySet, PolicySetError, policy_set_hash

from .conftest import LATER, NOW, World


def submit(pdp: PolicyDecisionPoint, world: World, **job_changes):
    from dataclasses import replace

    job = replace(world.job, **job_changes)
    return pdp.decide(world.engineer, "submit_job", job, None, world.facts())


def test_an_allowed_decision_carries_everything_the_ledger_needs(
    pdp: PolicyDecisionPoint, recorder: MemoryRecorder, world: World, policy_set
) -> None:
    d = submit(pdp, world)
    assert d.allowed
    assert d.policies == ("baseline.engineer.submit_job",)
    assert d.reasons == ("An engineer files training jobs.",)
    assert d.errors == ()
    assert uuid.UUID(d.decision_id).version == 4
    assert d.policy_set_hash == policy_set.hash == policy_set_hash(Path("policies"))
    assert d.principal == 'Sandbox::Engineer::"eve"'
    assert d.action == "submit_job"
    assert d.resource == 'Sandbox::Job::"job-1"'
    assert d.time == NOW and d.time.tzinfo is UTC
    assert len(d.context_digest) == 64 and len(d.facts_digest) == 64
    assert recorder.decisions == [d]
    record = json.loads(json.dumps(d.to_record()))
    assert record["allowed"] is True and record["time"] == "2026-06-01T00:00:00Z"


def test_denials_are_recorded_too(pdp, recorder, world) -> None:
    d = submit(pdp, world, secure_aggregation=False)
    assert not d.allowed
    assert recorder.decisions == [d]


def test_digests_follow_the_inputs(pdp, world) -> None:
    company = world.companies["h1"]
    ctx = RoundContext(1, Decimal("0.5"), Decimal("0.5"))
    job = world.job
    a = pdp.decide(company, "participate_in_round", job, ctx, world.facts())
    b = pdp.decide(company, "participate_in_round", job, ctx, world.facts())
    c = pdp.decide(company, "participate_in_round", job, RoundContext(2, 0, 0), world.facts())
    d = pdp.decide(company, "participate_in_round", job, ctx, world.facts(without=("h2",)))
    assert a.context_digest == b.context_digest != c.context_digest
    assert a.facts_digest == b.facts_digest != d.facts_digest
    assert a.decision_id != b.decision_id


def test_readable_reasons_name_the_numbers(pdp, world) -> None:
    d = submit(
        pdp, world, dp_epsilon=Decimal("4"), participants=("h1", "h2"), datasets=("d-h1", "d-h2")
    )
    assert not d.allowed
    text = " ".join(d.reasons)
    assert "epsilon 4.0" in text and "high: 3.0" in text
    assert "has 2 participants" in text and "at least 3" in text
    d = pdp.decide(world.engineer, "submit_job", world.job, None, world.facts(without=("h2",)))
    assert d.reasons[0].endswith("participants without one: h2.")


class Boom(RuntimeError):
    pass


def test_a_recorder_that_fails_turns_an_allow_into_a_deny(policy_set, world) -> None:
    attempts = []

    def broken(decision):
        attempts.append(decision)
        raise Boom("disk full")

    pdp = PolicyDecisionPoint(policy_set, broken, clock=lambda: NOW)
    d = submit(pdp, world)
    assert not d.allowed
    assert d.policies == ()
    assert "could not be written to the audit ledger" in d.reasons[0]
    assert "disk full" in d.errors[0]
    # the allow was offered first, then the fail-closed denial
    assert attempts[0].allowed and attempts[1] == d
    assert attempts[0].decision_id in d.errors[0]


def test_the_fail_closed_denial_is_recorded_when_the_ledger_comes_back(policy_set, world):
    kept = []

    def flaky(decision):
        if not kept and decision.allowed:
            kept.append(None)
            raise Boom("timeout")
        kept.append(decision)

    pdp = PolicyDecisionPoint(policy_set, flaky, clock=lambda: NOW)
    d = submit(pdp, world)
    assert not d.allowed and kept[-1] == d


def test_a_cedar_evaluation_error_denies(policy_copy: Path, world: World) -> None:
    # This policy validates, but reads an attribute of an entity the request does not carry.
    (policy_copy / "zz_extra.cedar").write_text(
        '@id("test.reads_missing_entity")\n'
        '@reason("Test: reads the grade of the consent\'s dataset.")\n'
        'permit (principal, action == Sandbox::Action::"grant_consent", '
        "resource is Sandbox::Consent)\n"
        'when { resource.dataset.grade == "general" };\n'
    )
    recorder = MemoryRecorder()
    pdp = PolicyDecisionPoint(LoadedPolicySet.from_dir(policy_copy), recorder, clock=lambda: NOW)
    consent = world.consents["h1"]
    d = pdp.decide(world.companies["h1"], "grant_consent", consent)  # dataset not given
    assert not d.allowed
    assert d.errors and "test.reads_missing_entity" in d.errors[0]
    assert "does not exist" in d.errors[0]
    assert "could not be evaluated" in d.reasons[0]
    assert recorder.decisions == [d]
    # with the dataset among the facts, the same request is allowed
    ok = pdp.decide(world.companies["h1"], "grant_consent", consent, None, [world.datasets["h1"]])
    assert ok.allowed and not ok.errors


def test_a_context_that_does_not_fit_the_schema_denies(pdp, world) -> None:
    d = pdp.decide(
        world.companies["h1"],
        "participate_in_round",
        world.job,
        {"round": "one", "epsilon_spent": 0.0, "epsilon_next": 0.0, "epsilon_after": 0.0},
        world.facts(),
    )
    assert not d.allowed and d.errors
    d = pdp.decide(world.companies["h1"], "participate_in_round", world.job, {}, world.facts())
    assert not d.allowed and d.errors


def test_a_job_over_an_unknown_dataset_denies(pdp, world) -> None:
    d = pdp.decide(
        world.engineer, "submit_job", world.job, None, [world.datasets["h1"], world.datasets["h2"]]
    )
    assert not d.allowed
    assert "no facts describe it" in d.errors[0]


def test_contradicting_facts_deny(pdp, world) -> None:
    other = DatasetFacts("d-h1", "h1", "Retail trade", "general", False)
    d = pdp.decide(world.engineer, "submit_job", world.job, None, [*world.facts(), other])
    assert not d.allowed and "two different facts" in d.errors[0]


def test_a_dataset_of_a_non_participant_denies(pdp, world) -> None:
    from dataclasses import replace

    job = replace(world.job, participants=("h1", "h2"))
    d = pdp.decide(world.engineer, "submit_job", job, None, world.facts())
    assert not d.allowed and "not one of its participants" in d.errors[0]


def test_an_unknown_action_denies(pdp, world) -> None:
    d = pdp.decide(world.engineer, "delete_everything", world.job, None, world.facts())
    assert not d.allowed and "not an action" in d.errors[0]


def test_without_an_active_policy_set_everything_is_denied(recorder, world) -> None:
    pdp = PolicyDecisionPoint(None, recorder)
    d = pdp.decide(world.regulator, "read_audit", AuditLogFacts(), AuditScope())
    assert not d.allowed and "No policy set is active" in d.reasons[0]
    assert recorder.decisions == [d]


def test_decimals_round_up_so_nothing_slips_under_a_cap(pdp, world) -> None:
    assert submit(pdp, world, dp_epsilon=Decimal("2.99999")).allowed  # 3.0000 <= 3
    d = submit(pdp, world, dp_epsilon=Decimal("3.00001"))  # 3.0001 > 3
    assert not d.allowed and d.policies == ("admission.dp_epsilon_cap",)


def test_consent_liveness_is_judged_at_the_decision_time(policy_set, world) -> None:
    recorder = MemoryRecorder()
    before = PolicyDecisionPoint(policy_set, recorder, clock=lambda: NOW)
    after = PolicyDecisionPoint(policy_set, recorder, clock=lambda: LATER)
    assert submit(before, world).allowed
    d = submit(after, world)  # the consents end at LATER
    assert not d.allowed and d.policies == ("consent.covers_every_participant",)


def test_a_company_never_reads_another_companys_audit_entries(pdp) -> None:
    a, b = CompanyFacts("a", "Retail trade"), CompanyFacts("b", "Retail trade")
    own = pdp.decide(a, "read_audit", AuditLogFacts(), AuditScope(company=a))
    other = pdp.decide(a, "read_audit", AuditLogFacts(), AuditScope(company=b))
    everything = pdp.decide(a, "read_audit", AuditLogFacts(), AuditScope())
    assert own.allowed
    assert not other.allowed and other.policies == ("baseline.company.own_audit_entries",)
    assert not everything.allowed


def test_facts_are_validated_when_made() -> None:
    from policies.facts import FactsError

    with pytest.raises(FactsError):
        DatasetFacts("d", "c", "Retail trade", "secret", False)
    with pytest.raises(FactsError):
        ConsentFacts("k", "c", "d", "p", LATER.replace(tzinfo=None))
    with pytest.raises(FactsError):
        CompanyFacts("c", "Retail trade", status="gone")


def test_the_shipped_policy_set_validates_and_names_every_policy(policy_set) -> None:
    ids = [p.id for p in policy_set.policies]
    assert len(ids) == len(set(ids)) >= 30
    assert all(p.reason for p in policy_set.policies)


def problems_of_extra_policy(policy_dir: Path, text: str) -> str:
    """The problems loading reports once ``text`` is added to the set in ``policy_dir``."""
    (policy_dir / "zz_extra.cedar").write_text(text)
    with pytest.raises(PolicySetError) as err:
        LoadedPolicySet.from_dir(policy_dir)
    return " ".join(err.value.problems)


def test_a_policy_without_id_or_reason_is_refused(policy_copy: Path) -> None:
    text = problems_of_extra_policy(
        policy_copy,
        'permit (principal, action == Sandbox::Action::"join", resource);\n'
        '@id("baseline.company.join")\n@reason("")\n'
        'permit (principal, action == Sandbox::Action::"join", resource);\n',
    )
    assert "has no @id" in text and "no @reason" in text and "used twice" in text


def test_a_policy_that_does_not_validate_is_refused(policy_copy: Path) -> None:
    text = problems_of_extra_policy(
        policy_copy,
        '@id("test.bad")\n@reason("Test.")\n'
        'forbid (principal, action == Sandbox::Action::"join", resource is Sandbox::Registry)\n'
        "when { resource.no_such_attribute };\n",
    )
    assert "test.bad" in text


def test_cached_job_entities_never_stand_in_for_changed_facts(pdp, world) -> None:
    from dataclasses import replace

    company, ctx = world.companies["h1"], RoundContext(1, Decimal(0), Decimal("0.5"))
    unapproved, approved = world.job, replace(world.job, approved=True)
    answers = [
        pdp.decide(company, "participate_in_round", job, ctx, world.facts()).allowed
        for job in (unapproved, approved, unapproved, approved)
    ]
    assert answers == [False, True, False, True]
    revoked = world.facts(without=("h1",), extra=(replace(world.consents["h1"], revoked=True),))
    assert not pdp.decide(company, "participate_in_round", approved, ctx, revoked).allowed


def test_an_unforeseen_failure_is_a_recorded_denial(pdp, recorder, world, monkeypatch):
    import policies.engine

    def broken(*args, **kwargs):
        raise RuntimeError("unforeseen")

    monkeypatch.setattr(policies.engine, "build_entities", broken)
    d = submit(pdp, world)
    assert not d.allowed and "unforeseen" in d.errors[0]
    assert recorder.decisions == [d]


def test_something_that_is_no_fact_is_denied(pdp, recorder) -> None:
    d = pdp.decide("eve", "read_audit", AuditLogFacts())  # type: ignore[arg-type]
    assert not d.allowed and d.principal == "'eve'"
    assert recorder.decisions == [d]
