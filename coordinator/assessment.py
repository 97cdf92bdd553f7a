"""The release assessment of a finished job's model, from what the companies computed on
their own test splits (``assess`` task): each company's figures beside its local-only
baseline, the worst company's gap, the calibration error pooled from the companies' binned
sums, and the mean AUC drop under each perturbation. Metrics only; no row reaches here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sandbox.learning.calibration import ece_after_interval, federated_platt, summed_histograms
from sandbox.learning.encoding import FeatureSpec
from sandbox.learning.explanation import attributions, pooled_importance
from sandbox.learning.fairness import fairness_table
from sandbox.learning.metrics import CALIBRATION_BINS, ece_from_bins
from sandbox.learning.robustness import (
    PERTURBATIONS,
    RobustnessSettings,
    feature_blocks,
    shift_column_index,
)
from sandbox.learning.uncertainty import binned_auc_interval
from sandbox.protocol.messages import CALIBRATION_PARTS

_MEASURES = (("auc", "auc"), ("balanced_accuracy", "balanced-accuracy"), ("ece", "ece"))


@dataclass(frozen=True)
class CompanyAssessment:
    """One company's figures: the federated model on its test split, clean and perturbed,
    beside its local-only model. Gaps are local minus federated: positive means the
    company would have done better alone."""

    company: str
    test_rows: int
    test_positives: int
    federated: dict[str, float | None]
    local: dict[str, float | None] | None
    auc_gap: float | None
    balanced_accuracy_gap: float | None
    perturbed: dict[str, dict[str, Any]]
    auc_interval: tuple[float, float] | None = None
    """The 95% DeLong interval of the federated model's AUC on the company's test split."""
    gap_interval: tuple[float, float] | None = None
    """The 95% paired DeLong interval of the AUC gap (local minus federated), computed by the
    company on its own rows with both models."""

    @property
    def test_negatives(self) -> int:
        return self.test_rows - self.test_positives


@dataclass(frozen=True)
class Assessment:
    companies: list[CompanyAssessment]
    not_assessed: dict[str, str]
    worst_company: str | None
    worst_company_gap: float | None
    worst_balanced_accuracy_gap: float | None
    calibration_error: float | None
    robustness_drop: dict[str, float | None]
    robustness: dict[str, Any]
    worst_company_gap_low: float | None = None
    """The largest lower bound of a company's gap interval: above the tier's limit, the
    evidence says some company is served worse than the limit allows."""
    worst_company_gap_high: float | None = None
    """The largest upper bound (a company whose gap has no interval counts as 1): within the
    limit, the evidence says no company is."""
    fewest_test_positives: int = 0
    fewest_test_negatives: int = 0
    attributions: list[dict[str, Any]] = field(default_factory=list)
    """What drives the model, most important first (``sandbox.learning.explanation``)."""
    calibration: dict[str, Any] | None = None
    """The calibration map fitted from the companies' histograms, with the error before and
    after it on held-out halves (``sandbox.learning.calibration``); where it exists,
    ``calibration_error`` is the error after it, the one the released model has."""
    pooled_auc: dict[str, float] | None = None
    """The AUC over all companies' test rows together with its 95% interval, from their
    summed logit histograms (``sandbox.learning.uncertainty.binned_auc_interval``)."""
    calibration_error_raw: float | None = None
    """The uncalibrated model's error over all test rows, from the exact binned sums."""
    fairness: dict[str, Any] = field(default_factory=dict)
    """Outcomes by group of each protected attribute and the gaps between groups
    (``sandbox.learning.fairness``)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def worst_robustness_drop(self) -> tuple[str | None, float | None]:
        defined = {k: v for k, v in self.robustness_drop.items() if v is not None}
        if not defined:
            return None, None
        kind = max(defined, key=defined.__getitem__)
        return kind, defined[kind]


def _gap(local: float | None, federated: float | None) -> float | None:
    return None if local is None or federated is None else local - federated


def _weighted_mean(pairs: Iterable[tuple[float, float | None]]) -> float | None:
    usable = [(w, v) for w, v in pairs if v is not None and w > 0]
    if not usable:
        return None
    total = sum(w for w, _ in usable)
    return sum(w * v for w, v in usable) / total


def _pair(metrics: Mapping[str, float], low: str, high: str) -> tuple[float, float] | None:
    if low in metrics and high in metrics:
        return float(metrics[low]), float(metrics[high])
    return None


def _gap_bounds(rows: Sequence[CompanyAssessment]) -> tuple[float | None, float | None]:
    """The largest lower and upper bounds of the companies' gap intervals. A company whose
    gap has no interval gives no evidence either way: its lower bound is not known to exceed
    anything, its upper bound counts as the worst (1)."""
    judged = [r for r in rows if r.auc_gap is not None]
    if not judged:
        return None, None
    lows = [r.gap_interval[0] for r in judged if r.gap_interval is not None]
    highs = [r.gap_interval[1] if r.gap_interval is not None else 1.0 for r in judged]
    return (max(lows) if lows else -1.0), max(highs)


def build_assessment(
    companies: Sequence[str],
    replies: Mapping[str, Mapping[str, float]],
    baselines: Mapping[str, Mapping[str, float]],
    not_assessed: Mapping[str, str],
    encoding: FeatureSpec,
    robustness: RobustnessSettings,
    coefficients: Mapping[str, Mapping[str, Any]] | None = None,
) -> Assessment:
    """The assessment from the companies' ``assess`` replies and their local baselines
    (``coefficients``: a logistic regression's standardised weights). The protected
    attributes are those the companies reported outcomes by group for."""
    blocks = feature_blocks(encoding)
    column = shift_column_index(encoding, robustness.shift_column)
    shift_feature = encoding.categorical[column] if column is not None else None
    rows: list[CompanyAssessment] = []
    bins = {part: np.zeros(0) for part in CALIBRATION_PARTS}
    for company in companies:
        metrics = replies.get(company)
        if metrics is None:
            continue
        federated = {key: metrics.get(f"clean/{name}") for key, name in _MEASURES}
        federated["loss"] = metrics.get("clean/loss")
        base = baselines.get(company)
        local = {key: base.get(name) for key, name in _MEASURES} if base else None
        perturbed: dict[str, dict[str, Any]] = {}
        for kind in PERTURBATIONS:
            figures: dict[str, Any] = {
                key: metrics.get(f"{kind}/{name}") for key, name in _MEASURES
            }
            if all(v is None for v in figures.values()):
                continue
            figures["auc_drop"] = _gap(federated["auc"], figures["auc"])
            if kind == "missing" and "missing/feature" in metrics:
                figures["feature"] = blocks[int(metrics["missing/feature"])][0]
            if kind == "shift" and "shift/category" in metrics and shift_feature is not None:
                figures["category"] = shift_feature.vocabulary[int(metrics["shift/category"])]
            perturbed[kind] = figures
        for part in CALIBRATION_PARTS:
            values = [metrics.get(f"calibration/{part}/{b}") for b in range(CALIBRATION_BINS)]
            if all(v is not None for v in values):
                vector = np.asarray(values, dtype=np.float64)
                bins[part] = bins[part] + vector if bins[part].size else vector
        rows.append(
            CompanyAssessment(
                company=company,
                test_rows=int(metrics.get("num-examples", 0)),
                test_positives=int(metrics.get("positives", 0)),
                federated=federated,
                local=local,
                auc_gap=_gap(local["auc"] if local else None, federated["auc"]),
                balanced_accuracy_gap=_gap(
                    local["balanced_accuracy"] if local else None, federated["balanced_accuracy"]
                ),
                perturbed=perturbed,
                auc_interval=_pair(metrics, "clean/auc-low", "clean/auc-high"),
                gap_interval=_pair(metrics, "gap/auc-low", "gap/auc-high"),
            )
        )
    gaps = {r.company: r.auc_gap for r in rows if r.auc_gap is not None}
    worst = max(gaps, key=gaps.__getitem__) if gaps else None
    ba_gaps = [r.balanced_accuracy_gap for r in rows if r.balanced_accuracy_gap is not None]
    calibration = (
        ece_from_bins(*(bins[part] for part in CALIBRATION_PARTS))
        if all(bins[part].size for part in CALIBRATION_PARTS)
        else None
    )
    gap_low, gap_high = _gap_bounds(rows)
    names = [name for name, _ in blocks]
    fairness = fairness_table(replies, encoding)
    histograms = summed_histograms(replies)
    platt = federated_platt(histograms) if histograms is not None else None
    calibration_json = platt.to_json() if platt is not None else None
    pooled = None
    if histograms is not None:
        both = histograms.sum(axis=0)
        interval = binned_auc_interval(both[0], both[1])
        if interval is not None:
            pooled = {"estimate": interval.estimate, "low": interval.low, "high": interval.high}
        bounds = ece_after_interval(histograms) if calibration_json is not None else None
        if calibration_json is not None and bounds is not None:
            calibration_json["ece_after_interval"] = list(bounds)
    importance = pooled_importance(
        {
            c: [replies[c][f"importance/{i}"] for i in range(len(names))]
            for c in replies
            if all(f"importance/{i}" in replies[c] for i in range(len(names)))
        },
        {r.company: float(r.test_rows) for r in rows},
        names,
    )
    missing = dict(not_assessed)
    for company in companies:
        if company not in replies and company not in missing:
            missing[company] = "no assessment received"
    return Assessment(
        companies=rows,
        not_assessed=missing,
        worst_company=worst,
        worst_company_gap=gaps[worst] if worst is not None else None,
        worst_balanced_accuracy_gap=max(ba_gaps) if ba_gaps else None,
        calibration_error=platt.ece_after if platt is not None else calibration,
        calibration_error_raw=calibration,
        calibration=calibration_json,
        pooled_auc=pooled,
        robustness_drop={
            kind: _weighted_mean(
                (r.test_rows, r.perturbed.get(kind, {}).get("auc_drop")) for r in rows
            )
            for kind in PERTURBATIONS
        },
        worst_company_gap_low=gap_low,
        worst_company_gap_high=gap_high,
        fewest_test_positives=min((r.test_positives for r in rows), default=0),
        fewest_test_negatives=min((r.test_negatives for r in rows), default=0),
        attributions=attributions(importance, coefficients, sorted(fairness["attributes"])),
        fairness=fairness,
        robustness={
            **robustness.model_dump(mode="json"),
            "shift_column": shift_feature.name if shift_feature is not None else None,
        },
    )
