"""What crosses between the coordinator and a company's node, and nothing else.

The coordinator sends a *task* (a ConfigRecord ``config``, with an ArrayRecord ``arrays`` for
training and evaluation). A company replies with model arrays, scalar metrics and signed
statements only. ``check_reply`` is the single allow-list the coordinator applies to every
reply before it trusts it: unknown records, unknown metric names, arrays of the wrong name,
shape or dtype, and oversized strings are refused. Raw rows have nowhere to go.

Two queries carry model arrays *to* a company and bring back metrics only: ``assess`` (the
release assessment of the final model on the company's test split, clean and perturbed) and
``evaluate-models`` (several models at once, stacked along a leading axis, each scored on
the company's test split; the contribution estimate's utility). A company answers at most
``MAX_MODELS_PER_TASK`` models per query.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.app.typing import MetricRecordValues
from pydantic import BaseModel, ConfigDict

from sandbox.canonical import canonical_json
from sandbox.learning.encoding import FeatureSpec
from sandbox.learning.metrics import CALIBRATION_BINS
from sandbox.protocol.jobspec import DifferentialPrivacySpec, JobSpec, ModelSpec

TASK_IDENTIFY = "identify"
TASK_STATS = "feature-stats"
TASK_BASELINE = "local-baseline"
TASK_TRAIN = "train"
TASK_EVALUATE = "evaluate"
TASK_ASSESS = "assess"
TASK_EVALUATE_MODELS = "evaluate-models"
QUERY_TASKS = (TASK_IDENTIFY, TASK_STATS, TASK_BASELINE, TASK_ASSESS, TASK_EVALUATE_MODELS)

CONFIG = "config"
ARRAYS = "arrays"
METRICS = "metrics"
STATS = "stats"
IDENTITY = "identity"
RECEIPT = "receipt"
WARRANT = "warrant"  # a task config's field: the job's signed warrant
NOTICES = "notices"  # a reply's record: the node's signed refusal notices not yet delivered
WITNESS = "witness"  # an evaluate reply's record: the node's witness answer (status, body)
WITNESS_NOTE = "witness-note"  # task config: the ledger's newest signed checkpoint
WITNESS_PROOFS = "witness-proofs"  # task config: {old size: consistency proof (base64 list)}

# Under secure aggregation the train task travels as Flower's legacy FitIns: its config names
# the order of the model's arrays and the range the masked update must fit in.
SECURE_ARRAY_KEYS = "secure-array-keys"
SECURE_CLIPPING_RANGE = "secure-clipping-range"

MAX_STRING = 4096
EVAL_METRICS = {"num-examples", "positives", "loss", "auc", "balanced-accuracy", "ece"}
# Under DP a train reply also states what the run cost: ``epsilon`` (this run), ``epsilon-job``
# (the company's total in the job after it), ``delta``, and the mechanism that was run
# (``noise-multiplier``, ``sample-rate``, ``steps``), so that anyone can recompute the figures.
DP_METRICS = ("epsilon", "epsilon-job", "delta", "noise-multiplier", "sample-rate", "steps")
TRAIN_METRICS = {"num-examples", "loss", *DP_METRICS}
IDENTITY_FIELDS = {"company-id", "dataset-id", "public-key", "signature"}
RECEIPT_FIELDS = {"payload", "signature"}
_STAT_NAME = re.compile(r"^(rows|positives|(count|sum|sumsq)/[A-Za-z_][A-Za-z0-9_\-]{0,63})$")

ASSESS_KINDS = ("clean", "noise", "missing", "shift")
ASSESS_MEASURES = ("loss", "auc", "balanced-accuracy", "ece")
CALIBRATION_PARTS = ("count", "score", "label")
ASSESS_METRICS = (
    {"num-examples", "positives", "missing/feature", "shift/category"}
    | {"clean/auc-low", "clean/auc-high", "gap/auc", "gap/auc-low", "gap/auc-high"}
    | {f"{kind}/{measure}" for kind in ASSESS_KINDS for measure in ASSESS_MEASURES}
    | {f"calibration/{part}/{b}" for part in CALIBRATION_PARTS for b in range(CALIBRATION_BINS)}
)
# Besides the set above: each feature's permutation importance (``importance/<feature>``) and
# the counts by group of each protected attribute (``group/<attribute>/<group>/...``,
# ``sandbox.learning.fairness``).
ASSESS_METRIC = re.compile(
    "^(" + "|".join(re.escape(name) for name in sorted(ASSESS_METRICS))
    + r"|importance/(0|[1-9][0-9]{0,3})|calib/[01]/(pos|neg)/(0|[1-9][0-9]{0,2})"
    + r"|group/(0|[1-9][0-9]{0,3})/(0|[1-9][0-9]{0,3})/(rows|positives|tp|fp|hist-(pos|neg)/[0-9])"
    + ")$"
)  # fmt: skip
MAX_MODELS_PER_TASK = 512
MODEL_MEASURES = ("loss", "auc")
_MODEL_METRIC = re.compile(r"^(num-examples|positives|(loss|auc)/(0|[1-9][0-9]{0,3}))$")


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
    # The company refuses to send this job's updates other than through secure aggregation.
    secure_aggregation: bool = False
    rounds: int = 1
    max_update_norm: float | None = None
    code_bundle: str | None = None
    """The SHA-256 of the code bundle filed for the job (``sandbox.protocol.bundle``); a company's
    gate refuses the task when the code its node runs hashes to anything else."""
    warrant: str | None = None
    """The SHA-256 of the job's warrant (``sandbox.protocol.warrant``), which travels with
    every task; a company's node derives what it may do from the warrant, not from here."""

    def digest(self) -> str:
        return hashlib.sha256(canonical_json(self.model_dump(mode="json"))).hexdigest()

    def terms(self) -> dict[str, object]:
        """Everything of the plan that the filed spec fixes (all but the encoding and the
        threshold, which the coordinator works out at the start of the run)."""
        return self.model_dump(mode="json", exclude={"encoding", "threshold"})


def plan_from_spec(
    spec: JobSpec,
    job_id: str,
    engineer: str,
    code_bundle: str | None,
    warrant: str | None,
    encoding: FeatureSpec,
    threshold: float = 0.5,
) -> TrainingPlan:
    """The training plan a filed spec makes: the one rule, used by the coordinator to make
    the plan and by each company's node to check the plan it is sent."""
    return TrainingPlan(
        job_id=job_id,
        purpose=spec.purpose,
        engineer=engineer,
        dataset=spec.dataset,
        model=spec.model,
        encoding=encoding,
        train=TrainSettings(
            epochs=spec.local_epochs,
            learning_rate=spec.learning_rate,
            batch_size=spec.batch_size,
            optimizer=spec.optimizer,
            weight_decay=spec.weight_decay,
            proximal_mu=spec.strategy.proximal_mu if spec.strategy.name == "fedprox" else 0.0,
            seed=spec.seed,
        ),
        threshold=threshold,
        dp=spec.privacy.dp,
        rounds=spec.rounds,
        max_update_norm=spec.privacy.max_update_norm,
        secure_aggregation=spec.privacy.secure_aggregation,
        code_bundle=code_bundle,
        warrant=warrant,
    )


ASSESS_RETRIES = 1
"""A release assessment may be asked once more (a coordinator restarted while asking)."""


def scoring_allowance(spec: JobSpec) -> dict[str, int]:
    """How many models a company's node scores for a job at most, per kind of task: one per
    evaluation round (and the initial model's), the local-only baseline once, the release
    assessment (and one retry), and the contribution estimate's coalitions the spec allows
    (none under secure aggregation, where the coordinator sees no company's update to build a
    coalition from)."""
    evaluations = -(-spec.rounds // spec.evaluate_every) + 2
    return {
        TASK_BASELINE: 1,
        TASK_EVALUATE: evaluations,
        TASK_ASSESS: 1 + ASSESS_RETRIES,
        TASK_EVALUATE_MODELS: 0 if spec.privacy.secure_aggregation else spec.contribution_models,
    }


def _one_number(key: str, value: object) -> float:
    # Flower types a record's values as scalars *or lists* (and strings in a ConfigRecord); a
    # value that is not one number is a malformed record, refused here by name.
    if not isinstance(value, int | float):
        raise TypeError(f"record field {key!r} must be one number, not {type(value).__name__}")
    return value


def number(record: Mapping[str, object], key: str, default: float | None = None) -> float:
    """``record[key]`` (or ``default`` when absent) as a float."""
    value = record.get(key, default)
    if value is None:
        raise KeyError(f"the record has no {key!r}")
    return float(_one_number(key, value))


def numbers(record: Mapping[str, object]) -> dict[str, float]:
    """Every value of a record of scalar metrics, as sent (an int stays an int)."""
    return {key: _one_number(key, value) for key, value in record.items()}


def metric_record(values: Mapping[str, float]) -> MetricRecord:
    """A MetricRecord of scalar metrics (Flower's constructor wants its own value union)."""
    items: dict[str, MetricRecordValues] = dict(values)
    return MetricRecord(items)


def to_array_record(weights: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord(
        {name: Array(np.ascontiguousarray(value)) for name, value in weights.items()}
    )


def from_array_record(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in arrays.items()}


def stack_models(models: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Several models of one architecture as one set of arrays with a leading model axis."""
    if not models:
        raise ValueError("no models to stack")
    names = sorted(models[0])
    for model in models[1:]:
        if sorted(model) != names:
            raise ValueError("the models to stack do not name the same arrays")
    return {name: np.stack([m[name] for m in models]).astype(np.float32) for name in names}


def unstack_models(stacked: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    counts = {len(value) for value in stacked.values()}
    if len(counts) != 1:
        raise ValueError("the stacked arrays disagree on the number of models")
    count = counts.pop()
    return [{name: value[i] for name, value in stacked.items()} for i in range(count)]


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


def update_norm(update: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
    """L2 norm of ``update - reference`` over all arrays together."""
    total = 0.0
    for name, value in update.items():
        diff = np.asarray(value, dtype=np.float64) - np.asarray(reference[name], dtype=np.float64)
        total += float(np.dot(diff.ravel(), diff.ravel()))
    return float(np.sqrt(total))


def check_update_norm(
    update: dict[str, np.ndarray], reference: dict[str, np.ndarray], bound: float
) -> list[str]:
    """The update's distance from the model it started from must stay within ``bound``."""
    norm = update_norm(update, reference)
    if not np.isfinite(norm) or norm > bound:
        return [f"update norm {norm:.4g} exceeds the job's bound {bound:g}"]
    return []


def _model_metrics_ok(record: MetricRecord, model_count: int, problems: list[str]) -> None:
    """Each of the ``model_count`` models sent has a loss, and no metric names another."""
    losses = set()
    for key in record:
        match = _MODEL_METRIC.match(key)
        if match is None or match.group(3) is None:
            continue
        index = int(match.group(3))
        if index >= model_count:
            problems.append(f"metrics name model {index}, but {model_count} were sent")
        elif match.group(2) == "loss":
            losses.add(index)
    if len(losses) != model_count:
        problems.append(f"metrics give a loss for {len(losses)} of the {model_count} models sent")


def check_reply(
    task: str,
    content: RecordDict,
    expected_arrays: dict[str, tuple[int, ...]] | None = None,
    masked: bool = False,
    model_count: int | None = None,
) -> list[str]:
    """Every problem with a reply to ``task``; an empty list means the reply may be used.

    ``masked``: a train reply whose update went into secure aggregation; it must then carry
    no arrays at all (the coordinator only ever sees the aggregate). ``model_count`` is the
    number of models an ``evaluate-models`` query sent: the reply must score exactly those."""
    problems: list[str] = []
    allowed_records = {
        TASK_IDENTIFY: {IDENTITY},
        TASK_STATS: {STATS, RECEIPT},
        TASK_BASELINE: {METRICS, RECEIPT},
        TASK_EVALUATE: {METRICS, RECEIPT, WITNESS},
        TASK_TRAIN: {ARRAYS, METRICS, RECEIPT},
        TASK_ASSESS: {METRICS, RECEIPT},
        TASK_EVALUATE_MODELS: {METRICS, RECEIPT},
    }.get(task)
    if allowed_records is None:
        return [f"unknown task {task!r}"]
    keys = set(content.keys())
    if keys - allowed_records:
        problems.append(f"reply carries unexpected records {sorted(keys - allowed_records)}")
    if masked:
        allowed_records = allowed_records - {ARRAYS}
        if ARRAYS in keys:
            problems.append("a securely aggregated reply must not carry its arrays")
    required = allowed_records - {RECEIPT, WITNESS}
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
                names: dict[str, set[str] | re.Pattern[str]] = {
                    TASK_TRAIN: TRAIN_METRICS,
                    TASK_BASELINE: EVAL_METRICS | set(DP_METRICS),
                    TASK_ASSESS: ASSESS_METRIC,
                    TASK_EVALUATE_MODELS: _MODEL_METRIC,
                }
                _metrics_ok(record, names.get(task, EVAL_METRICS), problems, "metrics")
                if task == TASK_EVALUATE_MODELS and model_count is not None:
                    _model_metrics_ok(record, model_count, problems)
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
        elif key == WITNESS:
            if not isinstance(record, ConfigRecord) or set(record.keys()) != {"status", "body"}:
                problems.append("'witness' is a ConfigRecord of status and body")
            elif not isinstance(record["status"], int) or len(str(record["body"])) > 2000:
                problems.append("'witness' holds an integer status and a short body")
    return problems
