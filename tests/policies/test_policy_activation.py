"""Signed policy sets: activation only with a valid regulator signature over the set's hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.activation import activate, signature_valid
from policies.engine import MemoryRecorder, PolicyDecisionPoint
from policies.policyset import LoadedPolicySet, policy_set_hash
from sandbox.governance import start_policy_point as start
from sandbox.identity import generate_key, public_b64
from sandbox.registry.policy_sets import PolicyStore, sign_hash, sign_policy_set


@pytest.fixture
def regulator():
    return generate_key()


@pytest.fixture
def active(policy_copy: Path, regulator) -> tuple[PolicyDecisionPoint, MemoryRecorder]:
    """A decision point whose active set is ``policy_copy`` as it is now, properly signed."""
    recorder = MemoryRecorder()
    pdp = PolicyDecisionPoint(None, recorder)
    result = activate(
        pdp, policy_copy, sign_policy_set(regulator, policy_copy), public_b64(regulator)
    )
    assert result.activated
    return pdp, recorder


def tamper(policy_dir: Path) -> None:
    """Loosen the high tier: the kind of change that must not slip in unsigned."""
    path = policy_dir / "tier_high.cedar"
    path.write_text(path.read_text().replace("!resource.secure_aggregation", "false"))


def test_signatures_bind_the_hash_and_the_key(policy_copy: Path, regulator) -> None:
    digest = policy_set_hash(policy_copy)
    signature = sign_hash(regulator, digest)
    assert signature_valid(digest, signature, public_b64(regulator))
    assert not signature_valid(digest, signature, public_b64(generate_key()))
    assert not signature_valid("0" * 64, signature, public_b64(regulator))
    assert not signature_valid(digest, None, public_b64(regulator))
    assert not signature_valid(digest, "not base64!", public_b64(regulator))


def test_a_valid_signature_activates_and_is_recorded(policy_copy, regulator, active) -> None:
    pdp, recorder = active
    tamper(policy_copy)
    new_hash = policy_set_hash(policy_copy)
    result = activate(
        pdp, policy_copy, sign_policy_set(regulator, policy_copy), public_b64(regulator)
    )
    assert result.activated and result.active_hash == new_hash == pdp.active_hash
    assert result.decision.allowed
    assert result.decision.policies == ("baseline.operator.activate_policy",)
    assert recorder.decisions[-1] == result.decision
    assert result.decision.resource == f'Sandbox::PolicySet::"{new_hash}"'


def test_a_tampered_file_changes_the_hash_and_fails_without_a_new_signature(
    policy_copy, regulator, active
) -> None:
    pdp, recorder = active
    old_hash = pdp.active_hash
    old_signature = sign_policy_set(regulator, policy_copy)
    tamper(policy_copy)
    assert policy_set_hash(policy_copy) != old_hash
    result = activate(pdp, policy_copy, old_signature, public_b64(regulator))
    assert not result.activated
    assert pdp.active_hash == old_hash == result.active_hash
    assert result.problems == ("the signature does not verify",)
    assert result.decision.policies == ("baseline.policy.regulator_signature",)
    assert "no valid regulator signature" in result.decision.reasons[0]
    assert recorder.decisions[-1] == result.decision and not result.decision.allowed


def test_a_missing_signature_keeps_the_old_set(policy_copy, regulator, active) -> None:
    pdp, _ = active
    old_hash = pdp.active_hash
    tamper(policy_copy)
    result = activate(pdp, policy_copy, None, public_b64(regulator))
    assert not result.activated and pdp.active_hash == old_hash
    assert result.problems == ("no signature was given",)


def test_another_key_cannot_sign_for_the_regulator(policy_copy, regulator, active) -> None:
    pdp, _ = active
    tamper(policy_copy)
    forged = sign_policy_set(generate_key(), policy_copy)
    assert not activate(pdp, policy_copy, forged, public_b64(regulator)).activated


def test_a_signed_set_that_does_not_validate_is_refused(policy_copy, regulator, active):
    pdp, _ = active
    old_hash = pdp.active_hash
    (policy_copy / "broken.cedar").write_text("permit (principal, action, resource")
    result = activate(
        pdp, policy_copy, sign_policy_set(regulator, policy_copy), public_b64(regulator)
    )
    assert not result.activated and pdp.active_hash == old_hash
    assert result.decision.policies == ("baseline.policy.validated",)
    assert any("broken.cedar does not parse" in p for p in result.problems)


def test_an_activation_that_cannot_be_recorded_does_not_happen(policy_copy, regulator):
    def broken(decision):
        raise OSError("ledger unavailable")

    pdp = PolicyDecisionPoint(LoadedPolicySet.from_dir(policy_copy), broken)
    old_hash = pdp.active_hash
    tamper(policy_copy)
    result = activate(
        pdp, policy_copy, sign_policy_set(regulator, policy_copy), public_b64(regulator)
    )
    assert not result.activated and pdp.active_hash == old_hash


def test_first_start_bootstraps_then_later_starts_reverify(policy_copy, regulator, tmp_path):
    store = PolicyStore(tmp_path / "home" / "policy")
    recorder = MemoryRecorder()
    pub = public_b64(regulator)
    shipped_hash = policy_set_hash(policy_copy)

    pdp, results = start(store, recorder, pub, policy_dir=policy_copy, regulator_key=regulator)
    [boot] = results
    assert boot.activated and pdp.active_hash == shipped_hash
    assert boot.decision.policies == ("baseline.operator.bootstrap_policy",)
    assert "bootstrap" in boot.decision.reasons[0]

    # a later start: no key needed, the stored set is verified again
    pdp, results = start(store, recorder, pub, policy_dir=policy_copy)
    assert [r.activated for r in results] == [True]
    assert results[0].decision.policies == ("baseline.operator.activate_policy",)

    # a changed shipped set is refused and recorded until the regulator signs it
    tamper(policy_copy)
    pdp, results = start(store, recorder, pub, policy_dir=policy_copy)
    assert [r.activated for r in results] == [True, False]
    assert pdp.active_hash == shipped_hash
    assert results[1].decision in recorder.decisions

    store.file_signature(policy_set_hash(policy_copy), sign_policy_set(regulator, policy_copy))
    pdp, results = start(store, recorder, pub, policy_dir=policy_copy)
    assert [r.activated for r in results] == [True, True]
    assert pdp.active_hash == policy_set_hash(policy_copy)

    # and from then on it is the stored set
    pdp, results = start(store, recorder, pub, policy_dir=policy_copy)
    assert [r.activated for r in results] == [True]


def test_a_tampered_store_activates_nothing(policy_copy, regulator, tmp_path) -> None:
    store = PolicyStore(tmp_path / "policy")
    pub = public_b64(regulator)
    start(store, MemoryRecorder(), pub, policy_dir=policy_copy, regulator_key=regulator)
    tamper(store.active_dir)
    recorder = MemoryRecorder()
    pdp, results = start(store, recorder, pub, policy_dir=policy_copy)
    assert not results[0].activated
    # the shipped copy is still the signed one in the store's record, but it has no filed
    # signature of its own: nothing becomes active, and everything is denied
    assert pdp.active is None
    assert all(not d.allowed for d in recorder.decisions)


def test_first_start_needs_the_regulator_key(policy_copy, regulator, tmp_path) -> None:
    """Without the key at hand, a signature the regulator filed is needed (their key on
    their own machine); with it, it must be the regulator's."""
    store = PolicyStore(tmp_path / "policy")
    with pytest.raises(ValueError, match="needs the regulator's signature"):
        start(store, MemoryRecorder(), public_b64(regulator), policy_dir=policy_copy)
    with pytest.raises(ValueError, match="does not match"):
        start(
            store,
            MemoryRecorder(),
            public_b64(generate_key()),
            policy_dir=policy_copy,
            regulator_key=regulator,
        )
