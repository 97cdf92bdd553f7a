"""The centralized upper bound: one model trained on every company's training rows pooled.

Pooling rows is exactly what the sandbox exists to avoid, so this runs only inside the demo
and the benchmarks, to show how close federated training comes; it is labelled as such
wherever it is shown. Local-only baselines, by contrast, run at each company (see
``clients.work.local_baseline``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from sandbox.learning.models import build_model
from sandbox.learning.train import EvalStats, TrainConfig, evaluate, train
from sandbox.node.home import NodeHome
from sandbox.protocol.messages import TrainingPlan

POOLED_LABEL = "pooled (centralized upper bound: rows pooled; demo and benchmarks only)"


def pooled_baseline(node_dirs: Mapping[str, Path], plan: TrainingPlan) -> dict[str, EvalStats]:
    """Train on all companies' training rows together; evaluate on each company's test split.

    Same model, optimiser and encoding as the federated job, and the same number of passes
    over the data as each company makes in the job (rounds x local epochs).
    """
    parts = {}
    for company, folder in node_dirs.items():
        vault = NodeHome(folder).vault(plan.dataset)
        vault.verify()
        parts[company] = (
            plan.encoding.encode(vault.read("train")),
            plan.encoding.encode(vault.read("test")),
        )
    x = np.concatenate([train_part[0] for train_part, _ in parts.values()])
    y = np.concatenate([train_part[1] for train_part, _ in parts.values()])
    model = build_model(
        plan.model.kind, plan.encoding.input_dim, plan.model.hidden, seed=plan.train.seed
    )
    settings = plan.train
    train(
        model,
        x,
        y,
        TrainConfig(
            epochs=settings.epochs * plan.rounds,
            learning_rate=settings.learning_rate,
            batch_size=settings.batch_size,
            optimizer=settings.optimizer,
            weight_decay=settings.weight_decay,
            seed=settings.seed,
        ),
    )
    return {company: evaluate(model, *test, plan.threshold) for company, (_, test) in parts.items()}
