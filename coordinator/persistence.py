"""What a run keeps on disk in its folder (``runs/<job>/``), so that a coordinator killed
between rounds resumes after the last completed one: the job's state (plan, baselines, each
company's training rows), each round's model (synced before the round counts as completed),
the final model, and each round's accepted updates for the contribution estimate."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sandbox.files import write_json_atomic
from sandbox.protocol.messages import TrainingPlan

Weights = dict[str, np.ndarray]


def model_hash(weights: Weights) -> str:
    """SHA-256 over the arrays in name order, each with its dtype and shape."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        value = np.ascontiguousarray(weights[name])
        digest.update(f"{name}|{value.dtype.str}|{value.shape}\n".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def save_weights(path: Path, weights: Weights) -> None:
    """Write the arrays and sync them before they appear under ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    # numpy's default, named: else mypy matches ``**weights`` against ``allow_pickle: bool``.
    np.savez(tmp, allow_pickle=True, **weights)
    with tmp.open("rb") as written:
        os.fsync(written.fileno())
    tmp.replace(path)


def load_weights(path: Path) -> Weights:
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


@dataclass
class JobState:
    """What a resumed coordinator needs: the plan, the baselines, and each company's count of
    training rows (from its statistics; a DP job's schedules depend on them)."""

    plan: TrainingPlan
    baselines: dict[str, dict[str, float]]
    rows: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan.model_dump(mode="json"),
            "baselines": self.baselines,
            "rows": self.rows,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> JobState:
        return cls(
            plan=TrainingPlan.model_validate(raw["plan"]),
            baselines=raw["baselines"],
            rows={k: int(v) for k, v in raw.get("rows", {}).items()},
        )


@dataclass(frozen=True)
class RunFolder:
    """The run folder of one job."""

    path: Path

    @property
    def state_path(self) -> Path:
        return self.path / "state.json"

    @property
    def model_path(self) -> Path:
        return self.path / "model.npz"

    @property
    def updates_dir(self) -> Path:
        return self.path / "updates"

    def weights_path(self, number: int) -> Path:
        return self.path / f"weights-round-{number:04d}.npz"

    def load_state(self) -> JobState | None:
        if not self.state_path.exists():
            return None
        return JobState.from_json(json.loads(self.state_path.read_text()))

    def save_state(self, state: JobState) -> None:
        write_json_atomic(self.state_path, state.to_json())
