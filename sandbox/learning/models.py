"""Small PyTorch models for tabular data. Each outputs one logit per row."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

ModelKind = Literal["logreg", "mlp"]


def build_model(kind: ModelKind, input_dim: int, hidden: int = 32, seed: int = 0) -> nn.Module:
    """A freshly initialised model; the same ``seed`` gives the same weights everywhere."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if kind == "logreg":
            model: nn.Module = nn.Sequential(nn.Linear(input_dim, 1))
        elif kind == "mlp":
            model = nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        else:
            raise ValueError(f"unknown model kind {kind!r}; use 'logreg' or 'mlp'")
    finally:
        torch.random.set_rng_state(generator_state)
    return model


def get_weights(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def set_weights(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    state = model.state_dict()
    if set(weights) != set(state):
        raise ValueError(f"weights name {sorted(weights)} but the model has {sorted(state)}")
    for name, value in weights.items():
        if tuple(value.shape) != tuple(state[name].shape):
            raise ValueError(
                f"weight {name!r} has shape {value.shape}, expected {tuple(state[name].shape)}"
            )
    model.load_state_dict(
        {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in weights.items()}
    )


def predict_proba(model: nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).squeeze(-1)
    return torch.sigmoid(logits).numpy().astype(np.float64)
