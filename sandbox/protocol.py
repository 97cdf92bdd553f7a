"""What crosses between the coordinator and a company's node, and nothing else.

The coordinator sends a *task* (a ConfigRecord ``config``, with an ArrayRecord ``arrays`` for
training and evaluation). A company replies with model arrays, scalar metrics and signed
statements only. ``check_reply`` is the single allow-list the coordinator applies to every
reply before it trusts it: unknown records, unknown metric names, arrays of the wrong name,
shape or dtype, and oversized strings are refused. Raw rows have nowhere to go.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

import numpy as np
import rfc8785
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from pydantic import BaseModel, ConfigDict

from sandbox.jobspec import DifferentialPrivacySpec, ModelSpec
from sandbox.learning.encoding import FeatureSpec

TASK_IDENTIFY = "identify"
TASK_STATS = "feature-stats"
TASK_BASELINE = "local-baseline"
TASK_TRAIN = "train"
TASK_EVALUATE = "evaluate"
QUERY_TASKS = (TASK_IDENTIFY, TASK_STATS, TASK_BASELINE)

CONFIG = "config"
ARRAYS = "arrays"
METRICS = "metrics"
STATS = "stats"
IDENTITY = "identity"
RECEIPT = "receipt"

MAX_STRING = 4096
EVAL_METRICS = {"num-examples", "positives", "loss", "auc", "balanced-accuracy", "ece"}
TRAIN_METRICS = {"num-examples", "loss", "steps", "epsilon", "delta"}
IDENTITY_FIELDS = {"company-id", "dataset-id", "public-key", "signature"}
RECEIPT_FIELDS = {"payload", "signature"}
_STAT_NAME = re.compile(r"^(rows|positives|(count|sum|sumsq)/[A-Za-z_][A-Za-z0-9_\-]{0,63})$")


class TrainSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int
    learning_rate: float
    batch_size: int
    optimizer: Literal["sgd", "adam"]
    weight_decay: float
    proximal_mu: float
    seed: int


class TrainingPlan(BaseModel):
    """Everything a company needs to run its part of a job; identical for every company."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    purpose: str
    engineer: str
    dataset: str
    model: ModelSpec
    encoding: FeatureSpec
    train: TrainSettings
    threshold: float = 0.5
    dp: DifferentialPrivacySpec | None = None
    secure_aggregation: bool = False
    rounds: int = 1
    code_bundle: str | None = None
    """The SHA-256 of the code bundle filed for the job (``sandbox.bundle``); a company's
    gate refuses the task when the code its node runs hashes to anything else."""

    def digest(self) -> str:
        return hashlib.sha256(rfc8785.dumps(self.model_dump(mode="json"))).hexdigest()


def to_array_record(weights: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord(
        {name: Array(np.ascontiguousarray(value)) for name, value in weights.items()}
    )


def from_array_record(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in arrays.items()}


def identity_challenge(job_id: str, nonce: str) -> bytes:
    """The bytes a node signs to prove which company it is, bound to this job and nonce."""
    return f"sandbox-identify\n{job_id}\n{nonce}\n".encode()


def _strings_ok(record: ConfigRecord, allowed: set[str], problems: list[str], what: str) -> None:
    extra = set(record.keys()) - allowed
    missing = allowed - set(record.keys())
    if extra:
        problems.append(f"{what} carries unexpected fields {sorted(extra)}")
    if missing:
        problems.append(f"{what} lacks fields {sorted(missing)}")
    for key, value in record.items():
        if not isinstance(value, str) or len(value) > MAX_STRING:
            problems.append(
                f"{what} field {key!r} must be a string of at most {MAX_STRING} characters"
            )


def _metrics_ok(
    record: MetricRecord, allowed: set[str] | re.Pattern[str], problems: list[str], what: str
) -> None:
    for key, value in record.items():
        known = allowed.match(key) if isinstance(allowed, re.Pattern) else key in allowed
        if not known:
            problems.append(f"{what} carries an unexpected metric {key!r}")
        if isinstance(value, list) or not isinstance(value, (int, float)):
            problems.append(f"{what} metric {key!r} must be one number")
        elif not np.isfinite(value):
            problems.append(f"{what} metric {key!r} is not finite")


def check_arrays(arrays: ArrayRecord, expected: dict[str, tuple[int, ...]]) -> list[str]:
    """Names, shapes, dtype (float32) and finiteness of a model update."""
    problems = []
    names = list(arrays.keys())
    if set(names) != set(expected):
        return [f"update names arrays {sorted(names)}, expected {sorted(expected)}"]
    for name, array in arrays.items():
        value = array.numpy()
        if tuple(value.shape) != expected[name]:
            problems.append(
                f"array {name!r} has shape {tuple(value.shape)}, expected {expected[name]}"
            )
        elif value.dtype != np.float32:
            problems.append(f"array {name!r} has dtype {value.dtype}, expected float32")
        elif not np.isfinite(value).all():
            problems.append(f"array {name!r} holds NaN or infinite values")
    return problems


def check_reply(
    task: str, content: RecordDict, expected_arrays: dict[str, tuple[int, ...]] | None = None
) -> list[str]:
    """Every problem with a reply to ``task``; an empty list means the reply may be used."""
    problems: list[str] = []
    allowed_records = {
        TASK_IDENTIFY: {IDENTITY},
        TASK_STATS: {STATS, RECEIPT},
        TASK_BASELINE: {METRICS, RECEIPT},
        TASK_EVALUATE: {METRICS, RECEIPT},
        TASK_TRAIN: {ARRAYS, METRICS, RECEIPT},
    }.get(task)
    if allowed_records is None:
        return [f"unknown task {task!r}"]
    keys = set(content.keys())
    if keys - allowed_records:
        problems.append(f"reply carries unexpected records {sorted(keys - allowed_records)}")
    required = allowed_records - {RECEIPT}
    if required - keys:
        problems.append(f"reply lacks records {sorted(required - keys)}")
    for key, record in content.items():
        if key == ARRAYS:
            if not isinstance(record, ArrayRecord):
                problems.append("'arrays' must be an ArrayRecord")
            elif expected_arrays is not None:
                problems.extend(check_arrays(record, expected_arrays))
        elif key == METRICS:
            if not isinstance(record, MetricRecord):
                problems.append("'metrics' must be a MetricRecord")
            else:
                _metrics_ok(
                    record,
                    TRAIN_METRICS if task == TASK_TRAIN else EVAL_METRICS,
                    problems,
                    "metrics",
                )
        elif key == STATS:
            if not isinstance(record, MetricRecord):
                problems.append("'stats' must be a MetricRecord")
            else:
                _metrics_ok(record, _STAT_NAME, problems, "stats")
        elif key == IDENTITY:
            if not isinstance(record, ConfigRecord):
                problems.append("'identity' must be a ConfigRecord")
            else:
                _strings_ok(record, IDENTITY_FIELDS, problems, "identity")
        elif key == RECEIPT:
            if not isinstance(record, ConfigRecord):
                problems.append("'receipt' must be a ConfigRecord")
            else:
                _strings_ok(record, RECEIPT_FIELDS, problems, "receipt")
    return problems
