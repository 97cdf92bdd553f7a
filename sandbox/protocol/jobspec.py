"""The job spec: an engineer's filed request to train one model for one purpose.

A spec is data (TOML or JSON). It is validated strictly, and its hash (SHA-256 of its RFC
8785 canonical JSON) is what gets filed: the same spec always has the same hash.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sandbox.canonical import canonical_json
from sandbox.files import DocumentError, read_document, validation_problems
from sandbox.vocabulary import MAX_PARTICIPANTS, Id

StrategyName = Literal["fedavg", "fedprox", "fedtrimmedavg", "fedmedian", "krum"]


class JobSpecError(ValueError):
    """A job spec that cannot be accepted; ``problems`` name each field and what is wrong."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["logreg", "mlp"] = "logreg"
    hidden: int = Field(strict=True, default=32, ge=1, le=1024)


class StrategySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrategyName = "fedavg"
    proximal_mu: float = Field(strict=True, default=0.0, ge=0.0, le=100.0)
    trim_beta: float = Field(strict=True, default=0.2, gt=0.0, lt=0.5)
    krum_byzantine: int = Field(strict=True, default=1, ge=0, le=100)

    @model_validator(mode="after")
    def _mu_for_prox(self) -> StrategySpec:
        if self.name == "fedprox" and self.proximal_mu <= 0:
            raise ValueError("fedprox needs proximal_mu > 0")
        return self


class DifferentialPrivacySpec(BaseModel):
    """Record-level DP-SGD at every company (Opacus).

    ``epsilon`` is each company's total for the whole job (all rounds); each company's delta
    is at most 1/(10 x its training rows), and at most ``delta`` when set. Per-example
    gradients are clipped to ``max_grad_norm``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epsilon: float = Field(strict=True, ge=0.01, le=100.0)
    delta: float | None = Field(default=None, strict=True, ge=1e-12, lt=1e-2)
    max_grad_norm: float = Field(strict=True, default=3.0, ge=0.001, le=100.0)


# Under DP every optimiser step costs privacy, so a DP job takes fewer, larger steps by
# default: 20 rounds of 2 local epochs in batches of up to 512 rows (the whole training split
# of a 500-row company) at learning rate 2.0. On the census companies this keeps the mean
# AUC at epsilon 8 within about 0.01 of the non-private defaults (benchmarks/privacy.py).
# They fill the training settings a DP spec leaves unset; settings given are kept.
DP_TRAINING_DEFAULTS: dict[str, Any] = {
    "rounds": 20,
    "local_epochs": 2,
    "batch_size": 512,
    "learning_rate": 2.0,
}


class PrivacySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    secure_aggregation: bool = Field(default=False, strict=True)
    dp: DifferentialPrivacySpec | None = None
    max_update_norm: float | None = Field(default=None, strict=True, gt=0.0, le=1e4)


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    purpose: Id
    companies: tuple[Id, ...] = Field(min_length=1, max_length=MAX_PARTICIPANTS)
    dataset: Id = "census"
    features: tuple[str, ...] | None = None
    model: ModelSpec = ModelSpec()
    strategy: StrategySpec = StrategySpec()
    privacy: PrivacySpec = PrivacySpec()
    rounds: int = Field(strict=True, default=40, ge=1, le=1000)
    local_epochs: int = Field(strict=True, default=5, ge=1, le=100)
    learning_rate: float = Field(strict=True, default=0.05, gt=0.0, le=10.0)
    batch_size: int = Field(strict=True, default=64, ge=1, le=65536)
    optimizer: Literal["sgd", "adam"] = "sgd"
    weight_decay: float = Field(strict=True, default=0.001, ge=0.0, le=1.0)
    seed: int = Field(strict=True, default=0, ge=0, le=2**31 - 1)
    evaluate_every: int = Field(strict=True, default=1, ge=1, le=1000)
    contribution_models: int = Field(strict=True, default=6000, ge=0, le=100_000)
    """How many coalition models each company scores at most for the contribution estimate
    (jobs without secure aggregation; under it no coalition is scored). Each company's node
    refuses to score more."""
    min_participants: int = Field(strict=True, default=2, ge=1, le=MAX_PARTICIPANTS)
    round_timeout_s: float = Field(strict=True, default=300.0, gt=0.0, le=86400.0)
    description: str = Field(default="", max_length=2000)

    @model_validator(mode="before")
    @classmethod
    def _dp_training_defaults(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        privacy = raw.get("privacy")
        dp = privacy.get("dp") if isinstance(privacy, dict) else getattr(privacy, "dp", None)
        return raw if dp is None else {**DP_TRAINING_DEFAULTS, **raw}

    @field_validator("companies")
    @classmethod
    def _companies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        dupes = sorted({c for c in value if value.count(c) > 1})
        if dupes:
            raise ValueError(f"companies are named twice: {', '.join(dupes)}")
        return value

    @model_validator(mode="after")
    def _participants(self) -> JobSpec:
        if self.min_participants > len(self.companies):
            raise ValueError(
                f"min_participants ({self.min_participants}) exceeds the {len(self.companies)} "
                "companies named"
            )
        return self

    def canonical(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))

    @property
    def spec_hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()


def parse_job_spec(raw: Any) -> JobSpec:
    """Validate a spec given as a mapping; errors name the field."""
    if not isinstance(raw, dict):
        raise JobSpecError(["a job spec must be a table/object"])
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        problems = validation_problems(exc, "spec")
        raise JobSpecError(problems) from exc


def load_job_spec(path: Path) -> JobSpec:
    """Read a spec file (.toml or .json)."""
    try:
        raw = read_document(path, "job spec")
    except DocumentError as exc:
        raise JobSpecError([str(exc)]) from None
    return parse_job_spec(raw)


SHOWN_SETTINGS = ("dataset", "rounds", "local_epochs", "learning_rate", "batch_size",
                  "optimizer", "min_participants", "evaluate_every", "seed")  # fmt: skip


def effective_settings(raw: Any, spec: JobSpec) -> list[tuple[str, Any, str]]:
    """The training settings a spec runs with and where each comes from: the spec itself,
    the defaults of a DP job (:data:`DP_TRAINING_DEFAULTS`) or the general defaults."""
    given = raw if isinstance(raw, dict) else {}
    rows = []
    for name in SHOWN_SETTINGS:
        if name in given:
            source = "your spec"
        elif spec.privacy.dp is not None and name in DP_TRAINING_DEFAULTS:
            source = "default under DP"
        else:
            source = "default"
        rows.append((name, getattr(spec, name), source))
    return rows
