"""Record-level DP-SGD accounting, the same arithmetic at the company and at the coordinator.

The job's ``epsilon`` is the total budget of one company for the whole job (all rounds).
Each company calibrates its noise multiplier for its own sampling rate (Opacus' Poisson
sampling: one expected batch of ``batch_size`` rows, ``ceil(rows / batch_size)`` steps per
epoch), its steps per round and the job's rounds, so that the job's total stays within
``epsilon`` at the company's ``delta``. The accountant is Rényi DP (Opacus' analysis of the
subsampled Gaussian mechanism), composed over every training run the company made.

A *run* is one round's local training at one company. The count of runs, not round numbers,
drives the accounting: a round re-sent after a coordinator restart is a second run and is
paid for again. The company's local-only baseline (its model trained alone, for comparison)
is trained under the same noise and paid for from the same budget: one more run of as many
epochs as the whole federated job.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from sandbox.protocol.jobspec import DifferentialPrivacySpec

# Opacus is imported inside the functions that use it: importing it costs more than a second
# (it loads torch.distributed and scipy.stats), and every node task that does not account DP
# (evaluation, assessment, identity) would pay that in its own app process.

# The Rényi orders of Opacus' RDPAccountant.DEFAULT_ALPHAS (a test keeps them equal).
ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))
CALIBRATION_TOLERANCE = 0.01
# Room for floating-point noise when a total is compared against its budget.
EPSILON_SLACK = 1e-9


class PrivacyBudgetExceeded(RuntimeError):
    """A training run would take a company beyond the privacy budget it may spend."""


def default_delta(rows: int, spec_delta: float | None = None) -> float:
    """The company's delta: at most 1/(10 * rows), and at most the job's delta if it sets one."""
    if rows <= 0:
        raise ValueError("a company without training rows has no delta")
    bound = 1.0 / (10.0 * rows)
    return min(spec_delta, bound) if spec_delta is not None else bound


def sample_rate(rows: int, batch_size: int) -> float:
    """Opacus' Poisson rate for a DataLoader of ``batch_size``: 1 / (batches per epoch)."""
    if rows <= 0 or batch_size <= 0:
        raise ValueError("rows and batch size must be positive")
    return 1.0 / math.ceil(rows / batch_size)


def steps_per_epoch(rows: int, batch_size: int) -> int:
    """How many Poisson-sampled batches Opacus draws per epoch (its sampler's length)."""
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    return len(
        UniformWithReplacementSampler(num_samples=rows, sample_rate=sample_rate(rows, batch_size))
    )


@dataclass(frozen=True)
class Run:
    """One training run's mechanism: Gaussian noise ``noise_multiplier`` over ``steps``
    Poisson-sampled steps at rate ``sample_rate``."""

    noise_multiplier: float
    sample_rate: float
    steps: int


def composed_epsilon(runs: Iterable[Run], delta: float) -> float:
    """Epsilon at ``delta`` after all ``runs`` (RDP composition, then conversion)."""
    runs = [r for r in runs if r.steps > 0]
    if not runs:
        return 0.0
    from opacus.accountants.analysis import rdp as rdp_analysis

    rdp = sum(
        rdp_analysis.compute_rdp(
            q=r.sample_rate, noise_multiplier=r.noise_multiplier, steps=r.steps, orders=ORDERS
        )
        for r in runs
    )
    epsilon, _ = rdp_analysis.get_privacy_spent(orders=list(ORDERS), rdp=rdp, delta=delta)
    return float(epsilon)


@lru_cache(maxsize=1024)
def _calibrate(epsilon: float, delta: float, rate: float, steps: int) -> float:
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(
            target_epsilon=epsilon,
            target_delta=delta,
            sample_rate=rate,
            steps=steps,
            accountant="rdp",
            epsilon_tolerance=CALIBRATION_TOLERANCE,
        )
    )


@dataclass(frozen=True)
class DpSchedule:
    """One company's DP-SGD plan for a whole job."""

    target_epsilon: float
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps_per_round: int
    rounds: int
    baseline_steps: int = 0

    @property
    def run(self) -> Run:
        return Run(self.noise_multiplier, self.sample_rate, self.steps_per_round)

    @property
    def baseline_run(self) -> Run:
        return Run(self.noise_multiplier, self.sample_rate, self.baseline_steps)

    def epsilon_after(self, runs: int) -> float:
        """Epsilon spent after ``runs`` training runs of this schedule."""
        return composed_epsilon(
            [Run(self.noise_multiplier, self.sample_rate, self.steps_per_round * runs)], self.delta
        )


SPARE_RUNS = 1
"""Runs the noise is calibrated for beyond the job's rounds: a round sent again (after the
coordinator restarted mid-round, or a reply was lost) was a real use of the data and is paid
for, and the job must still be able to finish within its budget."""


def plan_schedule(
    dp: DifferentialPrivacySpec, rows: int, batch_size: int, epochs: int, rounds: int
) -> DpSchedule:
    """The noise multiplier that keeps the local-only baseline and ``rounds`` runs (and
    ``SPARE_RUNS`` more) of ``epochs`` epochs over ``rows`` rows within the job's epsilon at
    the company's delta."""
    delta = default_delta(rows, dp.delta)
    rate = sample_rate(rows, batch_size)
    per_round = epochs * steps_per_epoch(rows, batch_size)
    baseline = per_round * rounds
    sigma = _calibrate(dp.epsilon, delta, rate, per_round * (rounds + SPARE_RUNS) + baseline)
    return DpSchedule(
        target_epsilon=dp.epsilon,
        delta=delta,
        noise_multiplier=sigma,
        max_grad_norm=dp.max_grad_norm,
        sample_rate=rate,
        steps_per_round=per_round,
        rounds=rounds,
        baseline_steps=baseline,
    )


def next_round_epsilon(schedule: DpSchedule, runs_done: int) -> float:
    """What the next run costs: epsilon after ``runs_done + 1`` runs minus after ``runs_done``."""
    return schedule.epsilon_after(runs_done + 1) - schedule.epsilon_after(runs_done)
