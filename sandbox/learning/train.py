"""The local training and evaluation loops, shared by clients, baselines and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from sandbox.learning.metrics import balanced_accuracy, expected_calibration_error, roc_auc
from sandbox.learning.models import predict_proba

OptimizerKind = Literal["sgd", "adam"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1
    learning_rate: float = 0.05
    batch_size: int = 64
    optimizer: OptimizerKind = "sgd"
    proximal_mu: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class TrainStats:
    num_examples: int
    loss: float
    steps: int


@dataclass(frozen=True)
class EvalStats:
    num_examples: int
    positives: int
    loss: float
    auc: float | None
    balanced_accuracy: float | None
    ece: float | None

    def as_metrics(self) -> dict[str, float]:
        """Scalar metrics for a reply; undefined values are left out, never sent as numbers."""
        out = {
            "num-examples": float(self.num_examples),
            "positives": float(self.positives),
            "loss": self.loss,
        }
        for key, value in (
            ("auc", self.auc),
            ("balanced-accuracy", self.balanced_accuracy),
            ("ece", self.ece),
        ):
            if value is not None:
                out[key] = value
        return out


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
    return torch.optim.SGD(
        model.parameters(), lr=config.learning_rate, momentum=0.9, weight_decay=config.weight_decay
    )


def proximal_term(model: nn.Module, anchor: list[torch.Tensor]) -> torch.Tensor:
    """FedProx's ||w - w_global||^2 over all parameters."""
    return sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True))  # type: ignore[return-value]


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, config: TrainConfig) -> TrainStats:
    """Mini-batch training; with ``proximal_mu`` > 0 the FedProx term anchors the weights the
    model holds on entry (the global model of the round)."""
    if len(x) == 0:
        return TrainStats(num_examples=0, loss=0.0, steps=0)
    generator = torch.Generator().manual_seed(config.seed)
    features = torch.from_numpy(x)
    labels = torch.from_numpy(y)
    optimizer = make_optimizer(model, config)
    loss_fn = nn.BCEWithLogitsLoss()
    anchor = [p.detach().clone() for p in model.parameters()] if config.proximal_mu > 0 else []
    model.train()
    total, count, steps = 0.0, 0, 0
    for _ in range(config.epochs):
        order = torch.randperm(len(features), generator=generator)
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(features[batch]).squeeze(-1), labels[batch])
            objective = (
                loss + config.proximal_mu / 2 * proximal_term(model, anchor) if anchor else loss
            )
            objective.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
            steps += 1
    return TrainStats(num_examples=len(x), loss=total / max(count, 1), steps=steps)


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, threshold: float) -> EvalStats:
    """Loss, AUC, balanced accuracy (at ``threshold``) and calibration error on (x, y)."""
    if len(x) == 0:
        return EvalStats(0, 0, 0.0, None, None, None)
    score = predict_proba(model, x)
    clipped = np.clip(score, 1e-7, 1 - 1e-7)
    loss = float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)))
    return EvalStats(
        num_examples=len(x),
        positives=int(y.sum()),
        loss=loss,
        auc=roc_auc(y, score),
        balanced_accuracy=balanced_accuracy(y, score, threshold),
        ece=expected_calibration_error(y, score),
    )
