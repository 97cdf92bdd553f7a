"""The company's side of the release assessment and of the contribution estimate.

Both score models the coordinator sends on the company's own held-out test split and return
scalar metrics only: the test rows, their scores and their labels stay here.
"""

from __future__ import annotations

import numpy as np
import torch

from clients import work
from sandbox.learning.calibration import logit_histograms
from sandbox.learning.explanation import permutation_importance
from sandbox.learning.fairness import group_counts
from sandbox.learning.metrics import calibration_bins
from sandbox.learning.models import build_model, predict_proba, set_weights
from sandbox.learning.robustness import RobustnessSettings, stress_tests
from sandbox.learning.train import evaluate
from sandbox.learning.uncertainty import auc_difference_interval, auc_interval
from sandbox.node.home import NodeHome
from sandbox.protocol.messages import (
    CALIBRATION_PARTS,
    MAX_MODELS_PER_TASK,
    TrainingPlan,
    unstack_models,
)


def _model(plan: TrainingPlan, weights: dict[str, np.ndarray]) -> torch.nn.Module:
    model = build_model(plan.model.kind, plan.encoding.input_dim, plan.model.hidden)
    set_weights(model, weights)
    return model


def assessment(
    node: NodeHome,
    plan: TrainingPlan,
    weights: dict[str, np.ndarray],
    settings: RobustnessSettings,
) -> dict[str, float]:
    """Clean and perturbed metrics of the final model, its AUC intervals, each feature's
    permutation importance, its logit histograms for calibration, the counts by group of the
    protected attributes its manifest declares, plus per-bin calibration sums."""
    data = work.encoded(node, plan)
    model = _model(plan, weights)
    outcomes = stress_tests(
        model, data.x_test, data.y_test, plan.encoding, plan.threshold, settings
    )
    clean = outcomes["clean"].stats
    metrics = {"num-examples": float(clean.num_examples), "positives": float(clean.positives)}
    for kind, outcome in outcomes.items():
        for name, value in outcome.stats.as_metrics().items():
            if name not in ("num-examples", "positives"):
                metrics[f"{kind}/{name}"] = value
    if "missing" in outcomes and outcomes["missing"].detail is not None:
        metrics["missing/feature"] = float(outcomes["missing"].detail)
    if "shift" in outcomes and outcomes["shift"].detail is not None:
        metrics["shift/category"] = float(outcomes["shift"].detail)
    importance = permutation_importance(
        model, data.x_test, data.y_test, plan.encoding, seed=settings.seed
    )
    for index, drop in enumerate(importance or ()):
        metrics[f"importance/{index}"] = drop
    federated_scores = predict_proba(model, data.x_test)
    metrics.update(_intervals(node, plan, data.x_test, data.y_test, federated_scores))
    metrics.update(logit_histograms(data.y_test, federated_scores, settings.seed))
    protected = node.vault(plan.dataset).manifest.protected
    metrics.update(
        group_counts(
            data.x_test, data.y_test, federated_scores, plan.encoding, protected, plan.threshold
        )
    )
    if len(data.y_test):
        sums = calibration_bins(data.y_test, federated_scores)
        for part, values in zip(CALIBRATION_PARTS, sums, strict=True):
            for b, value in enumerate(values):
                metrics[f"calibration/{part}/{b}"] = float(value)
    return metrics


def _intervals(
    node: NodeHome, plan: TrainingPlan, x: np.ndarray, y: np.ndarray, federated: np.ndarray
) -> dict[str, float]:
    """The federated model's AUC interval and, where this node kept its local-only model, the
    paired interval of the gap (local minus federated) on the same test rows."""
    out: dict[str, float] = {}
    auc = auc_interval(y, federated)
    if auc is not None:
        out["clean/auc-low"], out["clean/auc-high"] = auc.low, auc.high
    local = work.kept_local_model(node, plan)
    if local is not None:
        gap = auc_difference_interval(y, predict_proba(_model(plan, local), x), federated)
        if gap is not None:
            out["gap/auc"], out["gap/auc-low"] = gap.estimate, gap.low
            out["gap/auc-high"] = gap.high
    return out


def evaluate_models(
    node: NodeHome, plan: TrainingPlan, stacked: dict[str, np.ndarray]
) -> dict[str, float]:
    """Loss and AUC of each model in ``stacked`` (``loss/<i>``, ``auc/<i>``; the AUC is left
    out where the test split holds one class only)."""
    models = unstack_models(stacked)
    if len(models) > MAX_MODELS_PER_TASK:
        raise ValueError(
            f"{len(models)} models sent; a company scores at most {MAX_MODELS_PER_TASK} per query"
        )
    data = work.encoded(node, plan)
    metrics = {"num-examples": float(len(data.y_test)), "positives": float(data.y_test.sum())}
    model = build_model(plan.model.kind, plan.encoding.input_dim, plan.model.hidden)
    for i, weights in enumerate(models):
        set_weights(model, weights)
        stats = evaluate(model, data.x_test, data.y_test, plan.threshold)
        metrics[f"loss/{i}"] = stats.loss
        if stats.auc is not None:
            metrics[f"auc/{i}"] = stats.auc
    return metrics
