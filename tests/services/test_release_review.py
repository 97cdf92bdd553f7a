"""A regulator's review of a model the release gate held for want of evidence: signed,
decided, recorded; it releases a held model, and nothing else."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from policies.facts import EngineerFacts, RegulatorFacts
from sandbox import identity
from sandbox.config import Settings
from sandbox.errors import Conflict, Forbidden, Invalid
from sandbox.governance import get_governance
from sandbox.identity.installation import installation_regulator_key
from sandbox.learning.robustness import RobustnessSettings
from sandbox.registry import companies as company_store
from sandbox.registry import jobs as job_store
from sandbox.registry.models import Release
from sandbox.reports.model_card import model_card, privacy_summary
from sandbox.services import releases
from sandbox.utc import rfc3339, utcnow
from tests.support.world import file_runnable, join, tiny_plan

MODEL_HASH = "ab" * 32
THIN = {  # b's gap of 0.08 with an interval from -0.02 to 0.18 around the high tier's 0.05
    "companies": [],
    "not_assessed": {},
    "worst_company": "b",
    "worst_company_gap": 0.08,
    "worst_company_gap_low": -0.02,
    "worst_company_gap_high": 0.18,
    "fewest_test_positives": 20,
    "fewest_test_negatives": 100,
    "calibration_error": 0.02,
    "robustness_drop": {"noise": 0.01},
    "robustness": {**RobustnessSettings().model_dump(mode="json"), "shift_column": "sex"},
}
REGULATOR = RegulatorFacts("regulator")  # the installation's own regulator


@pytest.fixture
def held(sandbox_home: Settings) -> str:
    """An approved high-tier job whose model the release gate held for review."""
    gov = get_governance(sandbox_home)
    members = join(sandbox_home, gov.engine, ["Hospital services", "Construction", "Education"])
    job = file_runnable(
        sandbox_home,
        {"purpose": "income-prediction", "companies": members,
         "privacy": {"secure_aggregation": True, "dp": {"epsilon": 2.0}}},
    )  # fmt: skip
    run_dir = sandbox_home.runs_dir / job.id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "model.npz").write_bytes(b"the trained model")
    spec = job_store.job_spec(job)
    card = model_card(
        job=job, spec=spec, plan=tiny_plan(job_id=job.id),
        datasets=[company_store.get_dataset(gov.engine, c, "census") for c in members],
        model_hash=MODEL_HASH, rounds_completed=spec.rounds, assessment=THIN,
        verdict={"allowed": False, "outcome": "insufficient-evidence", "tier": "high",
                 "reasons": ["held"], "checks": [], "decided_by": "policy set x"},
        contributions=None, privacy=privacy_summary(spec, []),
    )  # fmt: skip
    (run_dir / "release-assessment.json").write_text(json.dumps(card))
    job_store.add_release(gov.engine, held_row(job.id, THIN))
    return job.id


def held_row(job_id: str, assessment: dict[str, Any]) -> Release:
    return Release(
        job_id=job_id, model_hash=MODEL_HASH, tier="high", allowed=False,
        outcome="insufficient-evidence", reasons=["held"], decided_by="policy set x",
        assessment=assessment,
    )  # fmt: skip


def review(settings: Settings, job_id: str, approve: bool, note: str = "", key: Any = None):  # type: ignore[no-untyped-def]
    gov = get_governance(settings)
    key = key or installation_regulator_key(settings, "the test")
    return releases.review_with_key(gov, REGULATOR, job_id, approve, note, key)


def test_an_approved_review_releases_the_held_model_with_the_signed_review(
    sandbox_home: Settings, held: str
) -> None:
    release = review(sandbox_home, held, True, "the intervals are wide, the gap small")
    assert release.allowed and release.outcome == "allow"
    assert "reviewed by regulator" in release.decided_by
    folder = sandbox_home.runs_dir / held / "release"
    assert (folder / "model.npz").read_bytes() == b"the trained model"
    card = json.loads((folder / "model-card.json").read_text())
    signed = card["release"]["review"]
    assert "Reviewed by regulator regulator" in (folder / "model-card.md").read_text()
    assert signed["regulator"] == "regulator" and signed["verdict"] == "approve"
    # Anyone with the regulator's public key checks the review the model leaves with.
    gov = get_governance(sandbox_home)
    assert identity.verify(
        gov.regulator_public_key, signed["statement"].encode(), signed["signature"]
    )
    assert json.loads(signed["statement"])["model_sha256"] == MODEL_HASH
    [entry] = [e for e in gov.ledger.entries() if e.record.action == "model.released"]
    assert entry.record.details["reviewed_by"] == "regulator"
    assert entry.record.details["outcome"] == "allow"
    assert [r.outcome for r in job_store.releases_of(gov.engine, held)] == [
        "insufficient-evidence",
        "allow",
    ]
    # Released: nothing is held any more, so there is nothing left to review, and the
    # policy refuses a review signed all the same.
    with pytest.raises(Conflict, match="no model held"):
        review(sandbox_home, held, True)
    key = installation_regulator_key(sandbox_home, "the test")
    now = rfc3339(utcnow())
    statement = releases.review_statement(held, MODEL_HASH, "regulator", True, now, "")
    with pytest.raises(
        Forbidden, match=r"No policy permits Regulator .regulator. to review_release"
    ):
        releases.review_release(gov, REGULATOR, held, True, "", now, identity.sign(key, statement))


def test_a_rejected_review_keeps_the_model_withheld_and_needs_a_reason(
    sandbox_home: Settings, held: str
) -> None:
    with pytest.raises(Invalid, match="reason"):
        review(sandbox_home, held, False, "  ")
    release = review(sandbox_home, held, False, "too few positives at two companies")
    assert not release.allowed and release.outcome == "deny"
    assert "too few positives" in release.reasons[0]
    assert not (sandbox_home.runs_dir / held / "release").exists()
    gov = get_governance(sandbox_home)
    assert any(e.record.action == "model.withheld" for e in gov.ledger.entries())


def test_a_review_signed_with_another_key_is_refused_and_changes_nothing(
    sandbox_home: Settings, held: str
) -> None:
    with pytest.raises(Forbidden, match="signature"):
        review(sandbox_home, held, True, key=Ed25519PrivateKey.generate())
    gov = get_governance(sandbox_home)
    assert len(job_store.releases_of(gov.engine, held)) == 1
    assert not (sandbox_home.runs_dir / held / "release").exists()


def test_a_review_signed_long_ago_is_refused(sandbox_home: Settings, held: str) -> None:
    gov = get_governance(sandbox_home)
    key = installation_regulator_key(sandbox_home, "the test")
    signed_at = "2020-01-01T00:00:00Z"
    statement = releases.review_statement(held, MODEL_HASH, "regulator", True, signed_at, "")
    with pytest.raises(Invalid, match="too long ago"):
        releases.review_release(
            gov, REGULATOR, held, True, "", signed_at, identity.sign(key, statement)
        )


def test_only_a_regulator_reviews(sandbox_home: Settings, held: str) -> None:
    gov = get_governance(sandbox_home)
    key = installation_regulator_key(sandbox_home, "the test")
    now = rfc3339(utcnow())
    statement = releases.review_statement(held, MODEL_HASH, "eve", True, now, "")
    with pytest.raises(Forbidden):
        releases.review_release(
            gov, EngineerFacts("eve"), held, True, "", now, identity.sign(key, statement)
        )
    assert len(job_store.releases_of(gov.engine, held)) == 1


def test_a_review_cannot_overturn_evidence_that_a_limit_is_exceeded(
    sandbox_home: Settings, held: str
) -> None:
    """Held on thin evidence about the gap, but the calibration error is over its limit:
    the review settles the doubt, and the release is still denied on calibration."""
    gov = get_governance(sandbox_home)
    job_store.add_release(gov.engine, held_row(held, {**THIN, "calibration_error": 0.09}))
    release = review(sandbox_home, held, True, "the gap is fine")
    assert not release.allowed and release.outcome == "deny"
    assert any("calibrated" in r for r in release.reasons)
    assert not (sandbox_home.runs_dir / held / "release").exists()


def test_nothing_held_nothing_to_review(sandbox_home: Settings) -> None:
    gov = get_governance(sandbox_home)
    members = join(sandbox_home, gov.engine, ["Construction", "Retail trade"])
    job = file_runnable(
        sandbox_home,
        {"purpose": "income-prediction", "companies": members, "privacy": {"dp": {"epsilon": 2.0}}},
    )
    with pytest.raises(Conflict, match="no model held"):
        review(sandbox_home, job.id, True)
