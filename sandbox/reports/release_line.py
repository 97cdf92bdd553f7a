"""The release in a job's compliance report: the decision, its outcome, and each company's
figures with their 95% intervals, as the registry's ``Release`` row keeps them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from sandbox.registry.models import Release


class CompanyInterval(BaseModel):
    """One company's federated AUC and its gap to its own model, each with its 95% interval."""

    company: str
    test_positives: int
    test_negatives: int
    auc: float | None
    auc_interval: tuple[float, float] | None
    gap: float | None
    gap_interval: tuple[float, float] | None


TOP_FEATURES = 8

OUTCOME_WORDS = {
    "allow": "allowed",
    "deny": "denied",
    "insufficient-evidence": "held for a regulator's review: insufficient evidence",
}


def _intervals(assessment: dict[str, Any]) -> list[CompanyInterval]:
    rows = []
    for row in assessment.get("companies", []):
        rows.append(
            CompanyInterval(
                company=row["company"],
                test_positives=row["test_positives"],
                test_negatives=row["test_rows"] - row["test_positives"],
                auc=row["federated"].get("auc"),
                auc_interval=row.get("auc_interval"),
                gap=row.get("auc_gap"),
                gap_interval=row.get("gap_interval"),
            )
        )
    return rows


class ReleaseLine(BaseModel):
    allowed: bool
    outcome: str = Field(description="allow, deny, or insufficient-evidence (held for review)")
    tier: str
    reasons: list[str]
    decided_by: str
    decided_at: datetime
    model_hash: str
    worst_company: str | None
    worst_company_gap: float | None
    worst_company_gap_low: float | None = Field(
        default=None, description="largest lower bound of the companies' 95% gap intervals"
    )
    worst_company_gap_high: float | None = Field(
        default=None, description="largest upper bound of the companies' 95% gap intervals"
    )
    intervals: list[CompanyInterval] = Field(default_factory=list)
    pooled_auc: dict[str, float] | None = Field(
        default=None, description="the AUC over all test rows with its 95% interval"
    )
    calibration: dict[str, Any] | None = Field(
        default=None, description="the calibration map and the error before and after it"
    )
    fairness: dict[str, Any] = Field(
        default_factory=dict, description="outcomes by group of each protected attribute"
    )
    attributions: list[dict[str, Any]] = Field(
        default_factory=list, description="the top features driving the model"
    )
    calibration_error: float | None
    robustness_drop: dict[str, float | None] = Field(
        description="AUC drop under each synthetic perturbation"
    )
    exported: bool
    ledger_index: int | None
    checkpoint_size: int | None


def _drops(value: Any) -> dict[str, float | None]:
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    return {} if value is None else {"overall": value}


def release_line(last: Release, index: int | None, checkpoint_size: int | None) -> ReleaseLine:
    """The report's line for the latest release decision (recorded at ledger ``index``)."""
    return ReleaseLine(
        allowed=last.allowed,
        outcome=last.outcome,
        tier=last.tier,
        reasons=list(last.reasons),
        decided_by=last.decided_by,
        decided_at=last.decided_at,
        model_hash=last.model_hash,
        worst_company=last.assessment.get("worst_company"),
        worst_company_gap=last.assessment.get("worst_company_gap"),
        worst_company_gap_low=last.assessment.get("worst_company_gap_low"),
        worst_company_gap_high=last.assessment.get("worst_company_gap_high"),
        intervals=_intervals(last.assessment),
        pooled_auc=last.assessment.get("pooled_auc"),
        calibration=last.assessment.get("calibration"),
        fairness=last.assessment.get("fairness") or {},
        attributions=(last.assessment.get("attributions") or [])[:TOP_FEATURES],
        calibration_error=last.assessment.get("calibration_error"),
        robustness_drop=_drops(last.assessment.get("robustness_drop")),
        exported=bool(last.exported_to),
        ledger_index=index,
        checkpoint_size=checkpoint_size,
    )
