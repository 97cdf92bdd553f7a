"""Outcomes by group of a protected attribute (sex, race, an age band: what a dataset's
manifest declares ``protected``), for the release assessment.

Each company counts, on its own test split and for each group of each protected attribute,
its rows, positives, true and false positives at the job's threshold, and a histogram of the
model's scores per class. These are sums: added over the companies they give exactly the
counts of all test rows together, and from them the coordinator computes each group's
true-positive rate, false-positive rate, positive-prediction rate and AUC (from the summed
histograms, ties within a bin counted half), then the gaps between groups:

- equal opportunity: the largest difference in true-positive rate between two groups;
- equalised odds' other half: the largest difference in false-positive rate;
- demographic parity: the largest difference in positive-prediction rate (reported; where
  base rates differ between groups a gap here is not by itself a fault, so it is not gated).

A group with fewer positives or negatives than the tier's minimum is listed but left out of
the gaps: its rates are too uncertain to judge. The sums travel as each company's metrics,
as the rest of the assessment does (not through secure aggregation): they are counts over
the company's test rows, never a row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sandbox.learning.encoding import FeatureSpec
from sandbox.learning.metrics import binned_auc
from sandbox.learning.robustness import feature_blocks

HISTOGRAM_BINS = 10
MIN_GROUP_CLASS = 10
"""A group takes part in the gaps only with at least this many positives and negatives over
all companies' test rows."""
COUNTS = ("rows", "positives", "tp", "fp")
"""Per group: rows, positive rows, true positives and false positives at the threshold."""


def group_counts(
    x: np.ndarray,
    y: np.ndarray,
    score: np.ndarray,
    encoding: FeatureSpec,
    protected: Sequence[str],
    threshold: float,
) -> dict[str, float]:
    """``group/<a>/<g>/<count>`` and ``group/<a>/<g>/hist-pos|hist-neg/<b>`` for attribute
    ``a`` (its index among the encoding's categorical features) and group ``g`` (its index in
    that feature's vocabulary), for every protected categorical feature of the encoding and
    every group with at least one row here."""
    labels = np.asarray(y).astype(bool)
    predicted = np.asarray(score) >= threshold
    bins = np.clip((np.asarray(score) * HISTOGRAM_BINS).astype(int), 0, HISTOGRAM_BINS - 1)
    numeric = len(encoding.numeric)
    blocks = feature_blocks(encoding)
    out: dict[str, float] = {}
    for a, feature in enumerate(encoding.categorical):
        if feature.name not in protected:
            continue
        block = blocks[numeric + a][1]
        for g in range(block.stop - block.start):
            member = x[:, block.start + g] == 1.0
            if not member.any():
                continue
            key = f"group/{a}/{g}"
            pos, neg = member & labels, member & ~labels
            out[f"{key}/rows"] = float(member.sum())
            out[f"{key}/positives"] = float(pos.sum())
            out[f"{key}/tp"] = float((pos & predicted).sum())
            out[f"{key}/fp"] = float((neg & predicted).sum())
            for kind, rows in (("hist-pos", pos), ("hist-neg", neg)):
                counts = np.bincount(bins[rows], minlength=HISTOGRAM_BINS)
                for b, count in enumerate(counts):
                    out[f"{key}/{kind}/{b}"] = float(count)
    return out


@dataclass(frozen=True)
class GroupFigures:
    attribute: str
    group: str
    rows: int
    positives: int
    tpr: float | None
    fpr: float | None
    positive_rate: float
    auc: float | None
    judged: bool
    """Enough positives and negatives to take part in the gaps."""


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def fairness_table(
    replies: Mapping[str, Mapping[str, float]],
    encoding: FeatureSpec,
    min_positives: int = MIN_GROUP_CLASS,
    min_negatives: int = MIN_GROUP_CLASS,
) -> dict[str, Any]:
    """Per protected attribute, each group's figures over all companies' test rows and the
    gaps between the judged groups; plus the largest gaps over all attributes."""
    sums: dict[tuple[int, int], dict[str, np.ndarray | float]] = {}
    for metrics in replies.values():
        for key, value in metrics.items():
            parts = key.split("/")
            if parts[0] != "group" or len(parts) < 4:
                continue
            cell = sums.setdefault((int(parts[1]), int(parts[2])), {})
            if parts[3] in COUNTS:
                cell[parts[3]] = float(cell.get(parts[3], 0.0)) + value
            elif len(parts) == 5:
                hist = cell.setdefault(parts[3], np.zeros(HISTOGRAM_BINS))
                assert isinstance(hist, np.ndarray)
                hist[int(parts[4])] += value
    attributes: dict[str, dict[str, Any]] = {}
    for (a, g), cell in sorted(sums.items()):
        feature = encoding.categorical[a]
        rows, positives = float(cell.get("rows", 0.0)), float(cell.get("positives", 0.0))
        negatives = rows - positives
        tp, fp = float(cell.get("tp", 0.0)), float(cell.get("fp", 0.0))
        empty = np.zeros(HISTOGRAM_BINS)
        hist_pos = cell.get("hist-pos", empty)
        hist_neg = cell.get("hist-neg", empty)
        assert isinstance(hist_pos, np.ndarray) and isinstance(hist_neg, np.ndarray)
        figures = GroupFigures(
            attribute=feature.name,
            group=feature.vocabulary[g],
            rows=int(rows),
            positives=int(positives),
            tpr=_ratio(tp, positives),
            fpr=_ratio(fp, negatives),
            positive_rate=(tp + fp) / rows if rows else 0.0,
            auc=binned_auc(hist_pos, hist_neg),
            judged=positives >= min_positives and negatives >= min_negatives,
        )
        attributes.setdefault(feature.name, {"groups": []})["groups"].append(figures.__dict__)
    for entry in attributes.values():
        judged = [g for g in entry["groups"] if g["judged"]]
        entry.update(
            tpr_gap=_spread([g["tpr"] for g in judged]),
            fpr_gap=_spread([g["fpr"] for g in judged]),
            parity_difference=_spread([g["positive_rate"] for g in judged]),
            auc_gap=_spread([g["auc"] for g in judged]),
        )
    return {
        "attributes": attributes,
        "tpr_gap": _largest(attributes, "tpr_gap"),
        "fpr_gap": _largest(attributes, "fpr_gap"),
        "parity_difference": _largest(attributes, "parity_difference"),
    }


def _spread(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return max(defined) - min(defined) if len(defined) >= 2 else None


def _largest(attributes: Mapping[str, Mapping[str, Any]], gap: str) -> float | None:
    values = [a[gap] for a in attributes.values() if a[gap] is not None]
    return max(values) if values else None
