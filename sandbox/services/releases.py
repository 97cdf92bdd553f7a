"""Release decisions: the context Cedar's ``release_model`` decides on, the verdict as people
read it, and a regulator's review of a model held for want of evidence.

A release gate that decides on confidence intervals has a third outcome: the evidence can
say neither that a limit is exceeded nor that it is met (``insufficient-evidence``). In the
tiers that ask for it, such a model is held, not exported, until a regulator reviews it:
:func:`review_release` checks the regulator's signature over the model's hash and the
verdict (so that no operator can release a model in a regulator's name), decides
``review_release``, and on approval asks ``release_model`` again with
``evidence_reviewed`` set. Cedar still denies a model whose evidence says a limit is
exceeded, or one that fails a check that is not about evidence; the review only settles
doubt. The review, signature included, goes into the model card the model leaves with.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from policies.engine import CheckResult, Decision
from policies.facts import EngineerFacts, ReleaseContext, ReviewContext
from policies.policyset import OUTCOME_DENY, OUTCOME_INSUFFICIENT_EVIDENCE
from sandbox import identity
from sandbox.canonical import canonical_json
from sandbox.errors import Conflict, Forbidden, Invalid
from sandbox.governance import Annotation, Governance, job_world
from sandbox.ledger import LedgerRecord, Resource
from sandbox.registry import jobs as store
from sandbox.registry.models import Release
from sandbox.reports.model_card import export_release, withdraw_release
from sandbox.services.base import actor_of, authorize
from sandbox.services.jobs import check_recent
from sandbox.services.warrants import regulator_key
from sandbox.utc import rfc3339, utcnow

OUTCOME_ALLOW = "allow"
REVIEW_STATEMENT = "sandbox release review v1"
_GROUP_GAPS = ("fairness_tpr_gap", "fairness_fpr_gap")
_MEASURES = (
    "worst_company_gap",
    "worst_company_gap_low",
    "worst_company_gap_high",
    "calibration_error",
)


# ------------------------------------------------------------------ the decision's inputs
def _figure(value: float | None) -> Decimal:
    """A finding for Cedar: a figure that could not be measured counts as the worst (1.0),
    so an unmeasurable assessment can never pass a threshold."""
    return Decimal("1") if value is None else Decimal(str(max(0.0, round(value, 6))))


def _signed_figure(value: float | None) -> Decimal:
    """A lower bound, which may be negative; unmeasured counts as the worst (1.0)."""
    return Decimal("1") if value is None else Decimal(str(round(value, 6)))


def _gap_figure(value: float | None) -> Decimal:
    """A gap between groups; none to compare (no protected attribute, or fewer than two
    groups large enough) is no gap."""
    return Decimal(0) if value is None else Decimal(str(max(0.0, round(value, 6))))


def worst_drop(assessment: Mapping[str, Any]) -> float | None:
    drops = [v for v in (assessment.get("robustness_drop") or {}).values() if v is not None]
    return max(drops) if drops else None


def release_context(
    assessment: Mapping[str, Any], evidence_reviewed: bool = False
) -> ReleaseContext:
    """An assessment's findings (its JSON form) as the context of ``release_model``."""
    fairness = assessment.get("fairness") or {}
    return ReleaseContext(
        worst_company=assessment.get("worst_company") or "none",
        worst_company_gap=_figure(assessment.get("worst_company_gap")),
        worst_company_gap_low=_signed_figure(assessment.get("worst_company_gap_low")),
        worst_company_gap_high=_figure(assessment.get("worst_company_gap_high")),
        fewest_test_positives=int(assessment.get("fewest_test_positives") or 0),
        fewest_test_negatives=int(assessment.get("fewest_test_negatives") or 0),
        evidence_reviewed=evidence_reviewed,
        calibration_error=_figure(assessment.get("calibration_error")),
        robustness_drop=_figure(worst_drop(assessment)),
        fairness_tpr_gap=_gap_figure(fairness.get("tpr_gap")),
        fairness_fpr_gap=_gap_figure(fairness.get("fpr_gap")),
        companies_not_assessed=len(assessment.get("not_assessed") or {}),
    )


# ------------------------------------------------------------------------- the verdict
@dataclass(frozen=True)
class Check:
    """One check of a release, as the deciding policy put it."""

    name: str
    passed: bool
    value: float | None
    limit: float | None
    reason: str
    outcome: str = OUTCOME_DENY
    """What failing it means: ``deny`` or ``insufficient-evidence``."""


@dataclass(frozen=True)
class ReleaseVerdict:
    """A release decision. ``outcome``: ``allow``; ``deny`` (the evidence says a limit is
    exceeded, or a check that is not about evidence failed); ``insufficient-evidence`` (only
    checks about thin evidence failed: the model is held for a regulator's review)."""

    allowed: bool
    tier: str
    reasons: list[str]
    checks: list[Check]
    decided_by: str
    outcome: str = OUTCOME_ALLOW

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _number(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def _check(result: CheckResult, measured: Mapping[str, float | None]) -> Check:
    """A policy's check as the verdict shows it; a figure that could not be measured is shown
    as such (Cedar judged it as the worst)."""
    value = measured.get(result.measure, _number(result.value))
    reason = result.text
    if value is None and result.measure in _GROUP_GAPS:
        reason += " (no two groups of a protected attribute hold enough rows to compare)"
    elif value is None and result.measure in measured:
        reason += " (not measurable, counted as the worst)"
    return Check(result.policy, result.passed, value, _number(result.limit), reason, result.outcome)


def release_verdict(decision: Decision, assessment: Mapping[str, Any], tier: str) -> ReleaseVerdict:
    """The verdict of a ``release_model`` decision: allowed or not, its outcome, and the
    checks that decided it, each as its policy put it (every ``@check`` policy, and every
    other policy that denied)."""
    measured: dict[str, float | None] = {m: assessment.get(m) for m in _MEASURES}
    measured["robustness_drop"] = worst_drop(assessment)
    measured["companies_not_assessed"] = float(len(assessment.get("not_assessed") or {}))
    for name in ("fewest_test_positives", "fewest_test_negatives"):
        measured[name] = float(assessment.get(name) or 0)
    fairness = assessment.get("fairness") or {}
    measured["fairness_tpr_gap"] = fairness.get("tpr_gap")
    measured["fairness_fpr_gap"] = fairness.get("fpr_gap")
    checks = [_check(c, measured) for c in decision.checks]
    shown = {c.policy for c in decision.checks}
    if not decision.allowed:
        checks += [
            Check(policy, False, None, None, reason)
            for policy, reason in zip(decision.policies, decision.reasons, strict=False)
            if policy not in shown
        ]
    failed = [c for c in checks if not c.passed]
    if decision.allowed:
        reasons = [f"every {tier}-tier release check is met"]
        outcome = OUTCOME_ALLOW
    else:
        reasons = [c.reason for c in failed] or list(decision.reasons)
        thin = bool(failed) and all(c.outcome == OUTCOME_INSUFFICIENT_EVIDENCE for c in failed)
        outcome = OUTCOME_INSUFFICIENT_EVIDENCE if thin else OUTCOME_DENY
    return ReleaseVerdict(
        allowed=decision.allowed,
        outcome=outcome,
        tier=tier,
        reasons=reasons,
        checks=checks,
        decided_by=f"policy set {decision.policy_set_hash[:12]}, decision {decision.decision_id}",
    )


# ------------------------------------------------------------------------- the review
def review_statement(
    job_id: str, model_hash: str, regulator_id: str, approve: bool, time: str, note: str
) -> bytes:
    """The bytes a regulator signs to approve (or reject) the release of a held model."""
    return canonical_json(
        {
            "statement": REVIEW_STATEMENT,
            "job": job_id,
            "model_sha256": model_hash,
            "regulator": regulator_id,
            "verdict": "approve" if approve else "reject",
            "time": time,
            "note_sha256": hashlib.sha256(note.encode()).hexdigest(),
        }
    )


def held_release(gov: Governance, job_id: str) -> Release:
    """The job's latest release decision, which must be holding the model for review."""
    releases = store.releases_of(gov.engine, job_id)
    if not releases or releases[-1].outcome != OUTCOME_INSUFFICIENT_EVIDENCE:
        raise Conflict(f"job {job_id} has no model held for a regulator's review")
    return releases[-1]


def review_release(
    gov: Governance,
    regulator: Any,
    job_id: str,
    approve: bool,
    note: str,
    signed_at: str,
    signature: str,
) -> Release:
    """A regulator's signed review of a model held for want of evidence: on approval the
    release is decided again with the review as context (and the model exported if Cedar
    allows it), on rejection the model stays withheld. Recorded either way."""
    note = note.strip()[:2000]
    if not approve and not note:
        raise Invalid("a rejection needs a reason")
    job = store.get_job(gov.engine, job_id)
    releases = store.releases_of(gov.engine, job_id)
    held = bool(releases) and releases[-1].outcome == OUTCOME_INSUFFICIENT_EVIDENCE
    spec = store.job_spec(job)
    world = job_world(gov.engine, job_id, spec, job.filed_by, job.approved_at is not None)
    annotation = Annotation(job_id=job_id, purpose=spec.purpose, consent_id="per-participant")
    review = authorize(
        gov, regulator, "review_release", world.job, ReviewContext(held_for_review=held),
        world.entities, annotation,
    )  # fmt: skip
    last = held_release(gov, job_id)
    run_dir = gov.settings.runs_dir / job_id
    if approve and not all(
        (run_dir / name).exists() for name in ("model.npz", "release-assessment.json")
    ):
        raise Conflict(f"job {job_id}'s run folder no longer holds its model and model card")
    check_recent(signed_at)
    public_key, _ = regulator_key(gov, regulator.id)
    statement = review_statement(job_id, last.model_hash, regulator.id, approve, signed_at, note)
    if not identity.verify(public_key, statement, signature):
        raise Forbidden(
            f"the review's signature is not regulator {regulator.id}'s over the release of "
            f"job {job_id}'s model {last.model_hash[:12]}"
        )
    signed = {
        "regulator": regulator.id,
        "verdict": "approve" if approve else "reject",
        "time": signed_at,
        "note": note,
        "statement": statement.decode(),
        "signature": signature,
        "decision": review.decision_id,
    }
    if approve:
        decision = gov.decide(
            EngineerFacts(job.filed_by), "release_model", world.job,
            release_context(last.assessment, evidence_reviewed=True), world.entities, annotation,
        )  # fmt: skip
        verdict = release_verdict(decision, last.assessment, last.tier)
    else:
        verdict = ReleaseVerdict(
            allowed=False,
            outcome=OUTCOME_DENY,
            tier=last.tier,
            reasons=[
                f"Regulator {regulator.id} reviewed the evidence and rejected the release: {note}"
            ],
            checks=[],
            decided_by=f"regulator {regulator.id}, decision {review.decision_id}",
        )
    return _conclude_review(gov, regulator, job_id, last, verdict, signed)


def review_with_key(
    gov: Governance, regulator: Any, job_id: str, approve: bool, note: str, key: Any
) -> Release:
    """Review as a regulator whose private key is at hand (the CLI's ``--key-file``; the
    installation's regulator key in the sandbox's home): sign the statement now, then
    :func:`review_release`."""
    last = held_release(gov, job_id)
    signed_at = rfc3339(utcnow())
    note = note.strip()[:2000]
    statement = review_statement(job_id, last.model_hash, regulator.id, approve, signed_at, note)
    signature = identity.sign(key, statement)
    return review_release(gov, regulator, job_id, approve, note, signed_at, signature)


def _conclude_review(
    gov: Governance,
    regulator: Any,
    job_id: str,
    last: Release,
    verdict: ReleaseVerdict,
    review: dict[str, Any],
) -> Release:
    run_dir = gov.settings.runs_dir / job_id
    card_path = run_dir / "release-assessment.json"
    card: dict[str, Any] = json.loads(card_path.read_text()) if card_path.exists() else {}
    if card:
        card["release"] = {**verdict.to_json(), "review": review}
        card_path.write_text(json.dumps(card, indent=2) + "\n")
    exported: Path | None = None
    if verdict.allowed:
        exported = export_release(run_dir, run_dir / "model.npz", card)
    else:
        withdraw_release(run_dir)
    release = store.add_release(
        gov.engine,
        Release(
            job_id=job_id,
            model_hash=last.model_hash,
            tier=last.tier,
            allowed=verdict.allowed,
            outcome=verdict.outcome,
            reasons=verdict.reasons,
            decided_by=f"{verdict.decided_by}; reviewed by {regulator.id}",
            assessment=last.assessment,
            contributions=last.contributions,
            exported_to=str(exported) if exported else None,
        ),
    )
    gov.record(
        LedgerRecord(
            action="model.released" if verdict.allowed else "model.withheld",
            actor=actor_of(regulator),
            resource=Resource(kind="release", id=f"{job_id}/release"),
            job_id=job_id,
            model_hash=last.model_hash,
            details={
                "allowed": verdict.allowed,
                "outcome": verdict.outcome,
                "tier": verdict.tier,
                "exported": exported is not None,
                "reviewed_by": regulator.id,
                "review_decision": review["decision"],
                "review_signature_sha256": hashlib.sha256(review["signature"].encode()).hexdigest(),
            },
        )
    )
    gov.ledger.checkpoint()
    return release
