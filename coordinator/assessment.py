"""The release assessment of a finished job's model, from what the companies computed on
their own test splits (``assess`` task): each company's figures beside its local-only
baseline, the worst company's gap, the calibration error pooled from the companies' binned
sums, and the mean AUC drop under each perturbation. Metrics only; no row reaches here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sandbox.learning.encoding import FeatureSpec
from sandbox.learning.metrics import CALIBRATION_BINS, ece_from_bins
from sandbox.learning.robustness import (
    PERTURBATIONS,
    RobustnessSettings,
    feature_blocks,
    shift_column_index,
)
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


def build_assessment(
    companies: Sequence[str],
    replies: Mapping[str, Mapping[str, float]],
    baselines: Mapping[str, Mapping[str, float]],
    not_assessed: Mapping[str, str],
    encoding: FeatureSpec,
    robustness: RobustnessSettings,
) -> Assessment:
    """The assessment from the companies' ``assess`` replies and their local baselines."""
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
        calibration_error=calibration,
        robustness_drop={
            kind: _weighted_mean(
                (r.test_rows, r.perturbed.get(kind, {}).get("auc_drop")) for r in rows
            )
            for kind in PERTURBATIONS
        },
        robustness={
            **robustness.model_dump(mode="json"),
            "shift_column": shift_feature.name if shift_feature is not None else None,
        },
    )
