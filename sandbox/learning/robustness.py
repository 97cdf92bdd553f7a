"""The release assessment's stress tests, run by a company on its own encoded test split.

Three perturbations of the inputs a production line would see:

- ``noise``: seeded Gaussian noise on every standardised numeric feature;
- ``missing``: one feature missing (a numeric one set to its mean, which is 0 after the
  job's standardisation; a categorical one with its one-hot block zeroed, as an unknown
  value encodes), each feature in turn, the worst one reported;
- ``shift``: the test split resampled so that one category of a chosen column makes up a
  set share of the rows, each sufficiently common category in turn, the worst one reported.

"Worst" means the lowest AUC, or the highest loss where the AUC is undefined.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from sandbox.learning.encoding import FeatureSpec
from sandbox.learning.train import EvalStats, evaluate

PERTURBATIONS = ("noise", "missing", "shift")


class RobustnessSettings(BaseModel):
    """How hard the stress tests push; sent by the coordinator, the same for every company."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    noise_std: float = Field(default=0.5, gt=0.0, le=10.0)
    shift_column: str | None = None
    shift_share: float = Field(default=0.5, gt=0.0, lt=1.0)
    shift_min_rows: int = Field(default=5, ge=1)
    seed: int = Field(default=0, ge=0)


@dataclass(frozen=True)
class Outcome:
    """Metrics under one perturbation; ``detail`` is the feature index (missing) or the
    category index within the shifted column (shift), else None."""

    stats: EvalStats
    detail: int | None = None


def feature_blocks(encoding: FeatureSpec) -> list[tuple[str, slice]]:
    """Each feature's columns in the encoded matrix, in encoding order (numeric first)."""
    blocks = [(f.name, slice(j, j + 1)) for j, f in enumerate(encoding.numeric)]
    offset = len(encoding.numeric)
    for feature in encoding.categorical:
        blocks.append((feature.name, slice(offset, offset + len(feature.vocabulary))))
        offset += len(feature.vocabulary)
    return blocks


def add_noise(x: np.ndarray, numeric_count: int, std: float, seed: int) -> np.ndarray:
    out = x.copy()
    rng = np.random.default_rng(seed)
    out[:, :numeric_count] += rng.normal(0.0, std, size=(len(x), numeric_count)).astype(x.dtype)
    return out


def drop_feature(x: np.ndarray, block: slice) -> np.ndarray:
    out = x.copy()
    out[:, block] = 0.0
    return out


def shift_category(
    x: np.ndarray, y: np.ndarray, column: int, share: float, seed: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """A resample of (x, y), as many rows as before, in which rows whose encoded column
    ``column`` is 1 make up ``share`` of the rows. None when there are no such rows, or only
    such rows."""
    member = x[:, column] == 1.0
    inside, outside = np.flatnonzero(member), np.flatnonzero(~member)
    if len(inside) == 0 or len(outside) == 0:
        return None
    rng = np.random.default_rng(seed)
    n = len(x)
    k = round(share * n)
    index = np.concatenate(
        (rng.choice(inside, size=k, replace=True), rng.choice(outside, size=n - k, replace=True))
    )
    return x[index], y[index]


def worse(a: EvalStats, b: EvalStats) -> bool:
    """Whether ``a`` is worse than ``b``: lower AUC, or higher loss if an AUC is undefined."""
    if a.auc is not None and b.auc is not None:
        return a.auc < b.auc
    return a.loss > b.loss


def _worst(candidates: list[Outcome]) -> Outcome | None:
    worst: Outcome | None = None
    for outcome in candidates:
        if worst is None or worse(outcome.stats, worst.stats):
            worst = outcome
    return worst


def shift_column_index(encoding: FeatureSpec, name: str | None) -> int | None:
    """Position among the categorical features of the column to shift: the named one, or
    the first with at least two categories."""
    for index, feature in enumerate(encoding.categorical):
        if (name is None and len(feature.vocabulary) >= 2) or feature.name == name:
            return index
    return None


def stress_tests(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    encoding: FeatureSpec,
    threshold: float,
    settings: RobustnessSettings,
) -> dict[str, Outcome]:
    """Clean metrics and the worst case of each perturbation (absent where none applies)."""
    out = {"clean": Outcome(evaluate(model, x, y, threshold))}
    numeric = len(encoding.numeric)
    if numeric:
        noisy = add_noise(x, numeric, settings.noise_std, settings.seed)
        out["noise"] = Outcome(evaluate(model, noisy, y, threshold))
    blocks = feature_blocks(encoding)
    missing = _worst(
        [
            Outcome(evaluate(model, drop_feature(x, block), y, threshold), index)
            for index, (_, block) in enumerate(blocks)
        ]
    )
    if missing is not None:
        out["missing"] = missing
    column = shift_column_index(encoding, settings.shift_column)
    if column is not None:
        _, block = blocks[numeric + column]
        shifted = []
        for category in range(block.stop - block.start):
            members = int((x[:, block.start + category] == 1.0).sum())
            if members < settings.shift_min_rows or members >= settings.shift_share * len(x):
                continue
            sample = shift_category(
                x, y, block.start + category, settings.shift_share, settings.seed + category
            )
            if sample is not None:
                shifted.append(Outcome(evaluate(model, *sample, threshold), category))
        worst = _worst(shifted)
        if worst is not None:
            out["shift"] = worst
    return out
