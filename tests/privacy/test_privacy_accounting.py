"""Record-level DP-SGD: the accountant against Opacus' own, the company's own account (per
job, purpose and dataset, the baseline paid for too), and the training loop (noise that the
plan cannot predict, FedProx kept under DP)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from torch.utils.data import DataLoader, TensorDataset

from clients import work
from clients.accountant import privacy_path
from clients.mandate import Refusal
from sandbox.data import census
from sandbox.governance import get_governance
from sandbox.learning.dp import train_dp
from sandbox.learning.encoding import FeatureSpec
from sandbox.learning.models import build_model, get_weights
from sandbox.learning.train import TrainConfig
from sandbox.node.home import NodeHome
from sandbox.privacy.accounting import (
    ORDERS,
    SPARE_RUNS,
    Run,
    composed_epsilon,
    default_delta,
    next_round_epsilon,
    plan_schedule,
)
from sandbox.protocol.jobspec import DifferentialPrivacySpec
from sandbox.protocol.messages import TrainingPlan
from sandbox.runtime.bare import serving_plan
from sandbox.services.companies import join
from tests.support.world import tiny_plan


def opacus_rate_and_steps(rows: int, batch_size: int) -> tuple[float, int]:
    """What Opacus itself derives from a DataLoader of ``rows`` rows."""
    loader = DataLoader(TensorDataset(torch.zeros(rows, 2), torch.zeros(rows)), batch_size)
    model = torch.nn.Linear(2, 1)
    with pytest.warns(UserWarning):
        engine = PrivacyEngine()
    _, _, dp_loader = engine.make_private(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=loader,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
    )
    return 1 / len(loader), len(dp_loader)


@pytest.mark.parametrize(
    ("rows", "batch", "epochs", "rounds", "epsilon"),
    [(375, 64, 5, 40, 8.0), (375, 512, 2, 20, 1.0), (39, 64, 1, 10, 4.0)],
)
def test_epsilon_matches_opacus_accountant(
    rows: int, batch: int, epochs: int, rounds: int, epsilon: float
) -> None:
    schedule = plan_schedule(DifferentialPrivacySpec(epsilon=epsilon), rows, batch, epochs, rounds)
    rate, per_epoch = opacus_rate_and_steps(rows, batch)
    delta = 1 / (10 * rows)
    assert schedule.delta == pytest.approx(delta)
    assert schedule.sample_rate == rate
    assert schedule.steps_per_round == epochs * per_epoch
    # Opacus' own calibration for the whole job gives the same noise multiplier: calibrated
    # for the local-only baseline, the job's rounds and its spare run.
    assert schedule.baseline_steps == rounds * epochs * per_epoch
    sigma = get_noise_multiplier(
        target_epsilon=epsilon,
        target_delta=delta,
        sample_rate=rate,
        steps=(2 * rounds + SPARE_RUNS) * epochs * per_epoch,
        accountant="rdp",
    )
    assert schedule.noise_multiplier == pytest.approx(sigma)
    # Opacus' RDP accountant, stepped once per optimiser step, agrees after every round.
    accountant = RDPAccountant()
    for done in range(1, rounds + 1):
        for _ in range(schedule.steps_per_round):
            accountant.step(noise_multiplier=sigma, sample_rate=rate)
        if done in (1, rounds // 2, rounds):
            assert schedule.epsilon_after(done) == pytest.approx(
                accountant.get_epsilon(delta), rel=1e-9
            )
    total = schedule.epsilon_after(rounds)
    assert total < epsilon
    everything = composed_epsilon(
        [schedule.baseline_run, Run(sigma, rate, (rounds + SPARE_RUNS) * schedule.steps_per_round)],
        delta,
    )
    assert epsilon - 0.05 < everything <= epsilon
    # An independent method (PRV) gives a tighter, not a larger, epsilon: RDP is an upper bound.
    prv = PRVAccountant()
    prv.history = [(sigma, rate, rounds * schedule.steps_per_round)]
    assert prv.get_epsilon(delta, eps_error=0.01) <= total + 0.02
    # Increments add up to the total.
    steps = [next_round_epsilon(schedule, done) for done in range(rounds)]
    assert sum(steps) == pytest.approx(total)
    assert all(s > 0 for s in steps)


def test_delta_is_at_most_one_over_ten_times_the_rows() -> None:
    assert default_delta(400) == pytest.approx(1 / 4000)
    assert default_delta(400, 1e-5) == 1e-5
    assert default_delta(400, 1e-3) == pytest.approx(1 / 4000)
    with pytest.raises(ValueError):
        default_delta(0)


def test_composition_of_different_runs_is_the_sum_of_their_rdp() -> None:
    runs = [Run(1.2, 0.1, 30), Run(2.0, 0.2, 10)]
    accountant = RDPAccountant()
    accountant.history = [(r.noise_multiplier, r.sample_rate, r.steps) for r in runs]
    assert composed_epsilon(runs, 1e-5) == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
    assert composed_epsilon([], 1e-5) == 0.0


# --------------------------------------------------------------------- the company's side
def census_plan(
    node: NodeHome, job_id: str, dp: DifferentialPrivacySpec, rounds: int
) -> TrainingPlan:
    manifest = node.vault("census").manifest
    encoding = FeatureSpec.from_manifests([manifest]).with_public_bounds()
    return tiny_plan(job_id=job_id, encoding=encoding, dp=dp, rounds=rounds)


@pytest.fixture
def node(sandbox_home, engine) -> NodeHome:  # type: ignore[no-untyped-def]
    industry = "Construction"
    folder = sandbox_home.company_dir("construction")
    join(
        get_governance(sandbox_home),
        folder,
        "construction",
        industry,
        census.company_table(industry, rows=200, seed=0),
    )
    return NodeHome(folder)


def runs_of(node: NodeHome, job_id: str) -> list[dict[str, object]]:
    document = json.loads(privacy_path(node, "census").read_text())
    return [r for r in document["runs"] if r["job"] == job_id]


def test_each_run_reports_what_opacus_accounted_and_the_account_survives_a_restart(
    node: NodeHome,
) -> None:
    rounds = 3
    plan = census_plan(node, "job-dp", DifferentialPrivacySpec(epsilon=2.0), rounds)
    with serving_plan(node, plan):
        rows = len(work.encoded(node, plan).x_train)
        schedule = plan_schedule(plan.dp, rows, plan.train.batch_size, 1, rounds)  # type: ignore[arg-type]
        weights = get_weights(build_model("logreg", plan.encoding.input_dim))
        accountant = RDPAccountant()
        _, baseline = work.local_baseline(node, plan)
        assert baseline is not None and baseline.steps == schedule.baseline_steps
        for _ in range(baseline.steps):
            accountant.step(
                noise_multiplier=schedule.noise_multiplier, sample_rate=schedule.sample_rate
            )
        reports = [baseline]
        for number in range(1, rounds + 1):
            weights, stats, report = work.local_training(node, plan, weights, number)
            assert report is not None and stats.steps == schedule.steps_per_round
            for _ in range(stats.steps):
                accountant.step(
                    noise_multiplier=schedule.noise_multiplier, sample_rate=schedule.sample_rate
                )
            assert report.epsilon_job == pytest.approx(
                accountant.get_epsilon(schedule.delta), rel=1e-9
            )
            assert report.delta == schedule.delta == pytest.approx(1 / (10 * rows))
            assert report.noise_multiplier == schedule.noise_multiplier
            reports.append(report)
        assert sum(r.epsilon for r in reports) == pytest.approx(reports[-1].epsilon_job)
        assert reports[-1].epsilon_job <= 2.0
        # The account is in the node folder: a restarted node (a fresh read) knows every run.
        # A round re-sent after a restart is paid for out of the spare run; one more would
        # exceed the job's epsilon: refused, and not written down.
        assert [r["round"] for r in runs_of(node, "job-dp")] == [0, 1, 2, 3]
        assert SPARE_RUNS == 1
        _, _, again = work.local_training(node, plan, weights, rounds)
        assert again is not None and again.epsilon_job <= 2.0
        with pytest.raises(Refusal, match="beyond its 2"):
            work.local_training(node, plan, weights, rounds)
    assert len(runs_of(node, "job-dp")) == 5


def test_a_job_cannot_change_its_privacy_terms_midway(node: NodeHome) -> None:
    plan = census_plan(node, "job-terms", DifferentialPrivacySpec(epsilon=4.0), 3)
    weights = get_weights(build_model("logreg", plan.encoding.input_dim))
    with serving_plan(node, plan):
        work.local_training(node, plan, weights, 1)
    looser = plan.model_copy(update={"dp": DifferentialPrivacySpec(epsilon=8.0)})
    with serving_plan(node, looser), pytest.raises(Refusal, match="privacy terms"):
        work.local_training(node, looser, weights, 2)


def test_the_dataset_cap_holds_across_purposes(node: NodeHome) -> None:
    """Jobs of different purposes each within their own epsilon still meet the dataset's cap,
    which the node enforces over all of them together."""
    weights = None
    spent = []
    for n, purpose in enumerate(("income-prediction", "churn", "fraud")):
        plan = census_plan(node, f"job-{purpose}", DifferentialPrivacySpec(epsilon=3.0), 1)
        plan = plan.model_copy(update={"purpose": purpose})
        weights = weights or get_weights(build_model("logreg", plan.encoding.input_dim))
        # The third purpose meets a dataset cap that the first two have already reached.
        cap = 6.0 if n < 2 else spent[-1]
        with serving_plan(node, plan, caps={"purpose": 100.0, "dataset": cap}):
            if n < 2:
                _, _, report = work.local_training(node, plan, weights, 1)
                assert report is not None and report.epsilon_purpose == report.epsilon_job
                spent.append(report.epsilon_dataset)
            else:
                with pytest.raises(Refusal, match="for the dataset"):
                    work.local_training(node, plan, weights, 1)
    # Composed over both purposes: more than either job alone, less than their sum.
    assert spent[0] < spent[1] < 2 * spent[0]
    assert len(json.loads(privacy_path(node, "census").read_text())["runs"]) == 2


def test_the_handlers_read_nothing_without_the_gate(node: NodeHome) -> None:
    plan = census_plan(node, "job-nogate", DifferentialPrivacySpec(epsilon=2.0), 1)
    with pytest.raises(Refusal, match="did not pass the company's gate"):
        work.encoded(node, plan)


def test_the_node_refuses_a_dataset_name_that_is_not_an_identifier(node: NodeHome) -> None:
    with pytest.raises(ValueError):
        privacy_path(node, "../../escape")


def test_dp_noise_cannot_be_predicted_from_the_plan() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    config = TrainConfig(epochs=1, batch_size=32, learning_rate=0.5, seed=7)
    outcomes = []
    for _ in range(2):
        model = build_model("logreg", 6, seed=0)
        train_dp(model, x, y, config, noise_multiplier=1.0, max_grad_norm=1.0)
        outcomes.append(get_weights(model)["0.weight"])
    assert not np.allclose(outcomes[0], outcomes[1])


def test_fedprox_term_is_kept_under_dp() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.float32)
    distances = {}
    for mu in (0.0, 5.0):
        model = build_model("logreg", 6, seed=0)
        start = torch.cat([p.detach().clone().ravel() for p in model.parameters()])
        config = TrainConfig(epochs=5, batch_size=300, learning_rate=0.5, proximal_mu=mu)
        train_dp(model, x, y, config, noise_multiplier=0.01, max_grad_norm=10.0)
        end = torch.cat([p.detach().ravel() for p in model.parameters()])
        distances[mu] = float((end - start).norm())
    assert distances[5.0] < 0.7 * distances[0.0]


def test_poisson_batches_may_be_empty_and_are_still_accounted() -> None:
    x = np.ones((3, 2), dtype=np.float32)
    y = np.array([0, 1, 1], dtype=np.float32)
    stats = train_dp(build_model("logreg", 2), x, y, TrainConfig(epochs=30, batch_size=1), 1.0, 1.0)
    assert stats.steps == 90 and stats.sample_rate == pytest.approx(1 / 3)
    assert np.isfinite(stats.loss)


def test_the_orders_are_opacus_rdp_accountants_own() -> None:
    assert list(ORDERS) == list(RDPAccountant.DEFAULT_ALPHAS)


def test_a_node_task_that_trains_no_dp_does_not_import_opacus() -> None:
    # A company's app process starts for every task; Opacus costs more than a second to
    # import and only DP training needs it.
    probe = "import sys, clients.app; print('opacus' in sys.modules, 'torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.split() == ["False", "True"]
