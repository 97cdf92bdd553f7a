"""The work a company's node does on its own rows: statistics, local baseline, training,
evaluation. Everything returned is a model array or a scalar; rows never leave this module.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from clients.privacy import PrivacyReport, RunLog
from sandbox.learning.dp import train_dp
from sandbox.learning.models import build_model, get_weights, set_weights
from sandbox.learning.train import EvalStats, TrainConfig, TrainStats, evaluate, train
from sandbox.node.home import NodeHome
from sandbox.privacy.accounting import DpSchedule, PrivacyBudgetExceeded, Run, plan_schedule
from sandbox.protocol.messages import TrainingPlan

_CACHE_SIZE = 64
_cache: OrderedDict[tuple[str, str, str], EncodedData] = OrderedDict()
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class EncodedData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _encoding_digest(plan: TrainingPlan) -> str:
    return hashlib.sha256(plan.encoding.model_dump_json().encode()).hexdigest()


def encoded(node: NodeHome, plan: TrainingPlan) -> EncodedData:
    """The company's vault encoded with the job's encoding (verified, cached per process)."""
    key = (str(node.folder), plan.dataset, _encoding_digest(plan))
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    vault = node.vault(plan.dataset)
    vault.verify()
    x_train, y_train = plan.encoding.encode(vault.read("train"))
    x_test, y_test = plan.encoding.encode(vault.read("test"))
    data = EncodedData(x_train, y_train, x_test, y_test)
    with _cache_lock:
        _cache[key] = data
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return data


def feature_statistics(node: NodeHome, plan: TrainingPlan) -> dict[str, float]:
    """Counts, sums and sums of squares of the numeric columns over the training rows, plus
    the row count and positive count: the sufficient statistics for standardisation."""
    vault = node.vault(plan.dataset)
    vault.verify()
    train_rows = vault.read("train")
    stats: dict[str, float] = {
        "rows": float(len(train_rows)),
        "positives": float(train_rows[plan.encoding.target].sum()),
    }
    for name, moments in plan.encoding.moments(train_rows).items():
        stats[f"count/{name}"] = moments.count
        stats[f"sum/{name}"] = moments.total
        stats[f"sumsq/{name}"] = moments.total_sq
    return stats


def train_config(plan: TrainingPlan, round_number: int, epochs: int | None = None) -> TrainConfig:
    settings = plan.train
    return TrainConfig(
        epochs=epochs if epochs is not None else settings.epochs,
        learning_rate=settings.learning_rate,
        batch_size=settings.batch_size,
        optimizer=settings.optimizer,
        proximal_mu=settings.proximal_mu,
        weight_decay=settings.weight_decay,
        seed=settings.seed * 100_003 + round_number,
    )


def _model(plan: TrainingPlan) -> torch.nn.Module:
    return build_model(
        plan.model.kind, plan.encoding.input_dim, plan.model.hidden, seed=plan.train.seed
    )


def local_baseline(node: NodeHome, plan: TrainingPlan) -> EvalStats:
    """The company's model trained alone: same model, same optimiser, same splits, and the
    same number of epochs over its rows as it trains in the whole federated job."""
    data = encoded(node, plan)
    model = _model(plan)
    train(model, data.x_train, data.y_train, train_config(plan, 0, plan.train.epochs * plan.rounds))
    return evaluate(model, data.x_test, data.y_test, plan.threshold)


def dp_schedule(plan: TrainingPlan, rows: int) -> DpSchedule:
    """This company's DP-SGD schedule for the job (its own rows set the rate and delta)."""
    if plan.dp is None:
        raise ValueError("the plan asks for no differential privacy")
    return plan_schedule(plan.dp, rows, plan.train.batch_size, plan.train.epochs, plan.rounds)


def local_training(
    node: NodeHome, plan: TrainingPlan, weights: dict[str, np.ndarray], round_number: int
) -> tuple[dict[str, np.ndarray], TrainStats, PrivacyReport | None]:
    """One round's local training; under DP, also what the run cost this company."""
    data = encoded(node, plan)
    model = _model(plan)
    set_weights(model, weights)
    config = train_config(plan, round_number)
    if plan.dp is None:
        stats = train(model, data.x_train, data.y_train, config)
        return get_weights(model), stats, None
    if len(data.x_train) == 0:
        raise PrivacyBudgetExceeded("a company without training rows cannot train under DP")
    schedule = dp_schedule(plan, len(data.x_train))
    with RunLog.locked(node, plan.job_id) as runs:
        runs.check_next(schedule)
        dp_stats = train_dp(
            model,
            data.x_train,
            data.y_train,
            config,
            schedule.noise_multiplier,
            schedule.max_grad_norm,
        )
        run = Run(dp_stats.noise_multiplier, dp_stats.sample_rate, dp_stats.steps)
        if run != schedule.run:
            raise PrivacyBudgetExceeded(
                f"the run Opacus accounted ({run}) is not the one planned ({schedule.run})"
            )
        report = runs.record(round_number, schedule, run)
    return get_weights(model), dp_stats, report


def local_evaluation(
    node: NodeHome, plan: TrainingPlan, weights: dict[str, np.ndarray]
) -> EvalStats:
    data = encoded(node, plan)
    model = _model(plan)
    set_weights(model, weights)
    return evaluate(model, data.x_test, data.y_test, plan.threshold)
