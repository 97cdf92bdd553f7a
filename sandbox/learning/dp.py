"""Record-level DP-SGD with Opacus: per-example clipping, Gaussian noise, Poisson sampling.

The noise and the Poisson sampling draw from a generator seeded from the operating system's
entropy, never from the job's seed: whoever knows the noise could subtract it, and the job's
seed is known to the coordinator. DP runs are therefore not bit-for-bit reproducible.

FedProx under DP: Opacus replaces each parameter's gradient by the clipped, noised mean of the
per-example gradients, which would silently drop the proximal term's gradient. The term does
not depend on any record, so it is added after privatisation (post-processing, no privacy cost).
"""

from __future__ import annotations

import secrets
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.optimizers import DPOptimizer
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sandbox.learning.train import TrainConfig, TrainStats, make_optimizer


@dataclass(frozen=True)
class DpTrainStats(TrainStats):
    """Training statistics plus the mechanism Opacus' own accountant recorded."""

    noise_multiplier: float = 0.0
    sample_rate: float = 0.0


def _secret_generator() -> torch.Generator:
    return torch.Generator().manual_seed(secrets.randbits(63))


def train_dp(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    noise_multiplier: float,
    max_grad_norm: float,
) -> DpTrainStats:
    """``config.epochs`` epochs of DP-SGD over (x, y); returns what Opacus accounted.

    The accountant history Opacus kept during the run is checked to be one mechanism
    (``noise_multiplier``, rate, steps); anything else raises rather than reporting a
    spend that does not match what was run.
    """
    if len(x) == 0:
        return DpTrainStats(0, 0.0, 0, noise_multiplier, 0.0)
    dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    loader = DataLoader(dataset, batch_size=config.batch_size)
    optimizer = make_optimizer(model, config)
    anchor = [p.detach().clone() for p in model.parameters()] if config.proximal_mu > 0 else []
    with warnings.catch_warnings():
        # Opacus warns that secure_mode is off; the generators below are seeded from OS entropy.
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp")
        hooks, dp_optimizer, dp_loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            poisson_sampling=True,
            noise_generator=_secret_generator(),
            wrap_model=False,
        )
    sampler = dp_loader.batch_sampler
    if not isinstance(sampler, UniformWithReplacementSampler):
        raise RuntimeError("Opacus did not set up Poisson sampling")
    sampler.generator = _secret_generator()
    try:
        total, count, steps = _run_epochs(model, dp_optimizer, dp_loader, config, anchor)
    finally:
        hooks.cleanup()
    history = engine.accountant.history
    if len(history) != 1 or history[0][2] != steps or history[0][0] != noise_multiplier:
        raise RuntimeError(f"Opacus accounted {history}, not {steps} steps at {noise_multiplier}")
    return DpTrainStats(
        num_examples=len(x),
        loss=total / max(count, 1),
        steps=steps,
        noise_multiplier=noise_multiplier,
        sample_rate=float(history[0][1]),
    )


def _run_epochs(
    model: nn.Module,
    optimizer: DPOptimizer,
    loader: DataLoader[tuple[torch.Tensor, ...]],
    config: TrainConfig,
    anchor: list[torch.Tensor],
) -> tuple[float, int, int]:
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    total, count, steps = 0.0, 0, 0
    with warnings.catch_warnings():
        # The inputs need no gradient; PyTorch says so on every backward pass through the hooks.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for _ in range(config.epochs):
            for features, labels in loader:
                optimizer.zero_grad()
                loss = loss_fn(model(features).squeeze(-1), labels)
                loss.backward()
                if not optimizer.pre_step():
                    raise RuntimeError("Opacus skipped a step; the accounting would not match")
                if anchor:
                    with torch.no_grad():
                        for p, a in zip(model.parameters(), anchor, strict=True):
                            if p.grad is not None:  # a frozen parameter has none
                                p.grad.add_(config.proximal_mu * (p - a))
                optimizer.original_optimizer.step()
                if len(labels):  # a Poisson batch may be empty; its loss is undefined
                    total += float(loss.detach()) * len(labels)
                    count += len(labels)
                steps += 1
    return total, count, steps
