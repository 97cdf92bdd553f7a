"""What drives a model, globally, for its model card and its report.

Two views, each computed where its inputs are:

- **permutation importance**, at each company on its own test split: the AUC lost when one
  feature's columns are shuffled across the rows (a categorical feature's one-hot block moves
  as one), averaged over a few seeded shuffles; the coordinator averages the companies'
  figures weighted by their test rows. It works for any model and needs no row to leave.
- **standardised coefficients** of a logistic regression, from the model's weights alone:
  the job's encoding already standardises numeric features, so a numeric feature's weight is
  the change in log-odds per standard deviation; a categorical feature is summarised by the
  spread of its categories' weights (largest minus smallest), with the category that raises
  the odds most.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import nn

from sandbox.learning.encoding import FeatureSpec
from sandbox.learning.metrics import roc_auc
from sandbox.learning.models import predict_proba
from sandbox.learning.robustness import feature_blocks

PERMUTATION_REPEATS = 3


def permutation_importance(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    encoding: FeatureSpec,
    seed: int = 0,
    repeats: int = PERMUTATION_REPEATS,
) -> list[float] | None:
    """Per feature (in the encoding's order), the mean AUC lost when its columns are shuffled;
    None when the AUC is undefined on these rows (one class only)."""
    base = roc_auc(y, predict_proba(model, x))
    if base is None:
        return None
    rng = np.random.default_rng(seed)
    drops = []
    for _, block in feature_blocks(encoding):
        lost = []
        for _ in range(repeats):
            shuffled = x.copy()
            shuffled[:, block] = x[rng.permutation(len(x))][:, block]
            auc = roc_auc(y, predict_proba(model, shuffled))
            lost.append(base - (auc if auc is not None else base))
        drops.append(float(np.mean(lost)))
    return drops


def pooled_importance(
    per_company: Mapping[str, Sequence[float]], weights: Mapping[str, float], names: list[str]
) -> dict[str, float]:
    """The companies' permutation importances averaged, weighted by their test rows."""
    usable = {c: v for c, v in per_company.items() if len(v) == len(names) and weights.get(c)}
    total = sum(weights[c] for c in usable)
    if not usable or total <= 0:
        return {}
    return {
        name: float(sum(weights[c] * usable[c][i] for c in usable) / total)
        for i, name in enumerate(names)
    }


def standardised_coefficients(
    weights: Mapping[str, np.ndarray], encoding: FeatureSpec, kind: str
) -> dict[str, dict[str, Any]] | None:
    """A logistic regression's weight per feature (None for any other model): a numeric
    feature's weight per standard deviation; for a categorical one the spread of its
    categories' weights and the category with the largest."""
    if kind != "logreg":
        return None
    coefficients = np.asarray(weights["0.weight"], dtype=np.float64).reshape(-1)
    out: dict[str, dict[str, Any]] = {}
    categorical = {f.name: f for f in encoding.categorical}
    for name, block in feature_blocks(encoding):
        values = coefficients[block]
        if name in categorical:
            top = int(np.argmax(values))
            out[name] = {
                "weight": float(values.max() - values.min()),
                "kind": "spread of the categories' weights",
                "raises_odds_most": categorical[name].vocabulary[top],
            }
        else:
            out[name] = {"weight": float(values[0]), "kind": "per standard deviation"}
    return out


def attributions(
    importance: Mapping[str, float],
    coefficients: Mapping[str, Mapping[str, Any]] | None,
    protected: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """One row per feature, most important first (by permutation importance, else by the
    size of its coefficient), with protected attributes flagged."""
    names = list(importance) or list(coefficients or {})
    rows = [
        {
            "feature": name,
            "permutation_auc_drop": importance.get(name),
            "coefficient": (coefficients or {}).get(name),
            "protected": name in protected,
        }
        for name in names
    ]

    def size(row: dict[str, Any]) -> float:
        if row["permutation_auc_drop"] is not None:
            return float(row["permutation_auc_drop"])
        return abs(float((row["coefficient"] or {}).get("weight", 0.0)))

    return sorted(rows, key=size, reverse=True)
