"""The work a company's node does on its own rows: statistics, local baseline, training,
evaluation. Everything returned is a model array or a scalar; rows never leave this module.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from clients.accountant import PrivacyAccount, PrivacyReport, RunKind
from clients.gate import active_mandate, report_spend, shipped_policy_set
from clients.mandate import Mandate, Refusal
from sandbox.files import write_atomic
from sandbox.learning.models import build_model, get_weights, set_weights
from sandbox.learning.train import EvalStats, TrainConfig, TrainStats, evaluate, train
from sandbox.node.home import NodeHome
from sandbox.privacy.accounting import DpSchedule, Run, plan_schedule
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
    """The company's vault encoded with the job's encoding (verified, cached per process).
    Only for a task that passed the company's gate."""
    active_mandate()
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
    the row count and positive count: the sufficient statistics for standardisation. Only in
    jobs without differential privacy (the release inventory has them nowhere else)."""
    mandate = active_mandate()
    if mandate.spec.privacy.dp is not None:
        raise Refusal("inventory", "exact statistics of the training rows never leave in a DP job")
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


def local_baseline(node: NodeHome, plan: TrainingPlan) -> tuple[EvalStats, PrivacyReport | None]:
    """The company's model trained alone: same model, same optimiser, same splits, and the
    same number of epochs over its rows as it trains in the whole federated job. In a job
    under differential privacy it is trained with the same DP-SGD noise and paid for from the
    job's budget (its measures leave the node, so its training must be private too)."""
    mandate = active_mandate()
    data = encoded(node, plan)
    model = _model(plan)
    config = train_config(plan, 0, plan.train.epochs * plan.rounds)
    report = None
    if mandate.spec.privacy.dp is None:
        train(model, data.x_train, data.y_train, config)
    else:
        schedule = _schedule(node, mandate, len(data.x_train))
        report = _private_run(
            node, mandate, schedule, schedule.baseline_run, "baseline", 0, model, data, config
        )
    _keep_local_model(node, plan, model)
    return evaluate(model, data.x_test, data.y_test, plan.threshold), report


def _keep_local_model(node: NodeHome, plan: TrainingPlan, model: torch.nn.Module) -> None:
    """Keep the company's local-only model on its own premises, so that the release
    assessment can score it beside the federated model on the same test rows."""
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **get_weights(model))
    write_atomic(node.local_model_path(plan.job_id), buffer.getvalue(), mode=0o600)


def kept_local_model(node: NodeHome, plan: TrainingPlan) -> dict[str, np.ndarray] | None:
    """The local-only model this node kept for the plan's job (None: it trained none)."""
    path = node.local_model_path(plan.job_id)
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


def _schedule(node: NodeHome, mandate: Mandate, rows: int) -> DpSchedule:
    """This company's DP-SGD schedule for the job, from the warrant's spec (never the plan)
    and the training rows its dataset's registration declared."""
    spec = mandate.spec
    if spec.privacy.dp is None:
        raise Refusal("inventory", "the job's filed spec asks for no differential privacy")
    declared = node.vault(mandate.dataset).manifest.train_rows
    if declared is not None and declared != rows:
        raise Refusal(
            "declared-rows",
            f"the vault holds {rows} training rows; its registration declared {declared}",
        )
    if rows == 0:
        raise Refusal("privacy-budget", "a company without training rows cannot train under DP")
    return plan_schedule(spec.privacy.dp, rows, spec.batch_size, spec.local_epochs, spec.rounds)


def _caps(mandate: Mandate) -> dict[str, float]:
    if mandate.caps is not None:
        return mandate.caps
    params = shipped_policy_set().tiers.tiers[mandate.tier]
    return {"purpose": float(params.dp_epsilon_cap), "dataset": float(params.dataset_epsilon_cap)}


def _private_run(
    node: NodeHome,
    mandate: Mandate,
    schedule: DpSchedule,
    planned: Run,
    kind: RunKind,
    round_number: int,
    model: torch.nn.Module,
    data: EncodedData,
    config: TrainConfig,
) -> PrivacyReport:
    """One DP-SGD run under the node's accountant: checked against every budget, run, checked
    to be the run planned, written down before its result leaves."""
    # Imported here: Opacus is only needed where DP training runs (see sandbox.privacy.accounting).
    from sandbox.learning.dp import train_dp

    with PrivacyAccount.locked(node, mandate.dataset) as account:
        account.check(mandate, schedule, planned, _caps(mandate))
        dp_stats = train_dp(
            model,
            data.x_train,
            data.y_train,
            config,
            schedule.noise_multiplier,
            schedule.max_grad_norm,
        )
        run = Run(dp_stats.noise_multiplier, dp_stats.sample_rate, dp_stats.steps)
        if run != planned:
            raise Refusal(
                "privacy-run",
                f"the run Opacus accounted ({run}) is not the one planned ({planned})",
            )
        report = account.record(mandate, schedule, run, kind, round_number)
    report_spend(
        {
            "job": report.epsilon_job,
            "purpose": report.epsilon_purpose,
            "dataset": report.epsilon_dataset,
        }
    )
    return report


def local_training(
    node: NodeHome, plan: TrainingPlan, weights: dict[str, np.ndarray], round_number: int
) -> tuple[dict[str, np.ndarray], TrainStats, PrivacyReport | None]:
    """One round's local training; under DP, also what the run cost this company."""
    mandate = active_mandate()
    data = encoded(node, plan)
    model = _model(plan)
    set_weights(model, weights)
    config = train_config(plan, round_number)
    if mandate.spec.privacy.dp is None:
        stats = train(model, data.x_train, data.y_train, config)
        return get_weights(model), stats, None
    schedule = _schedule(node, mandate, len(data.x_train))
    report = _private_run(
        node, mandate, schedule, schedule.run, "train", round_number, model, data, config
    )
    return get_weights(model), TrainStats(len(data.x_train), float("nan"), report.steps), report


def local_evaluation(
    node: NodeHome, plan: TrainingPlan, weights: dict[str, np.ndarray]
) -> EvalStats:
    data = encoded(node, plan)
    model = _model(plan)
    set_weights(model, weights)
    return evaluate(model, data.x_test, data.y_test, plan.threshold)
