"""One job, run over a Flower Grid, step by step.

The runner never opens a company's data. It learns which node is which company
(:mod:`coordinator.handshake`), computes the encoding's statistics from sums the companies
send and asks each company for its local-only baseline, runs the rounds
(:mod:`coordinator.rounds`), persisting each before the next starts so that a restarted
coordinator resumes after its last completed round (:mod:`coordinator.persistence`), and ends
with the release assessment, the contributions and the release decision
(:mod:`coordinator.conclusion`). Its governor (:mod:`coordinator.governor`) decides and
records at each of these points.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid
from sqlalchemy.engine import Engine

from coordinator import conclusion, handshake, rounds
from coordinator.context import JobStopped, RunContext
from coordinator.contribution import ContributionSettings, UpdateStore
from coordinator.governed import PolicyGate, RoundGovernor
from coordinator.governor import Governor, NoGovernor
from coordinator.messaging import Messenger, Progress, ReplyObserver
from coordinator.persistence import (
    JobState,
    RunFolder,
    Weights,
    load_weights,
    model_hash,
    save_weights,
)
from coordinator.privacy import JobPrivacy
from coordinator.release import RegistryRecorder
from coordinator.strategies import make_strategy
from sandbox.config import Settings
from sandbox.governance import Governance
from sandbox.learning.metrics import mean_defined
from sandbox.learning.robustness import RobustnessSettings
from sandbox.metering import cpu_seconds
from sandbox.services import runs

log = logging.getLogger("sandbox.coordinator")

__all__ = ["JobRunner", "JobStopped", "Progress", "ReplyObserver"]


class JobRunner:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        grid: Grid,
        job_id: str,
        progress: Progress | None = None,
        observer: ReplyObserver | None = None,
        context: Context | None = None,
        governance: Governance | None = None,
        robustness: RobustnessSettings | None = None,
        contribution: ContributionSettings | None = None,
    ):
        job = runs.job(engine, job_id)
        spec = runs.spec(job)
        folder = RunFolder(settings.runs_dir / job_id)
        governor: Governor = (
            RoundGovernor(governance, job, spec)
            if governance is not None
            else NoGovernor(PolicyGate(engine, job, spec), RegistryRecorder(engine))
        )
        self.ctx = RunContext(
            settings=settings,
            engine=engine,
            job=job,
            spec=spec,
            folder=folder,
            messenger=Messenger(grid, job_id, spec.round_timeout_s, governor, progress, observer),
            governor=governor,
            robustness=robustness or RobustnessSettings(seed=spec.seed),
            contribution=contribution or ContributionSettings(seed=spec.seed),
            updates=UpdateStore(folder.updates_dir),
            strategy=make_strategy(spec.strategy),
            flower_context=context,
        )
        self.ctx.messenger.warrant = job.warrant
        self.progress = progress

    @property
    def job_id(self) -> str:
        return self.ctx.job_id

    def run(self) -> dict[str, Any]:
        ctx = self.ctx
        ctx.governor.check_start()
        runs.begin(ctx.engine, self.job_id)
        try:
            result = self._run()
        except JobStopped as exc:
            log.warning("job %s stopped: %s", self.job_id, exc)
            runs.stop(ctx.engine, self.job_id, str(exc))
            done = runs.job(ctx.engine, self.job_id).rounds_completed
            ctx.governor.record_stop("too_few_participants", done)
            raise
        except Exception as exc:
            runs.fail(ctx.engine, self.job_id, f"{type(exc).__name__}: {exc}")
            raise
        return result

    def _run(self) -> dict[str, Any]:
        ctx = self.ctx
        self.started = (cpu_seconds(), time.perf_counter())
        handshake.identify(ctx)
        if len(ctx.participants()) < ctx.minimum:
            missing = sorted(set(ctx.spec.companies) - set(ctx.messenger.nodes))
            raise JobStopped(
                f"only {len(ctx.participants())} company nodes proved their identity, fewer "
                f"than the minimum {ctx.minimum}; not reachable: "
                f"{', '.join(missing)}"
            )
        start = ctx.job.rounds_completed
        state = ctx.folder.load_state() if start > 0 else None
        if state is not None:
            weights = load_weights(ctx.folder.weights_path(start))
            ctx.messenger.stage(f"resuming after round {start}")
        else:
            start = 0
            state = handshake.prepare(ctx)
            ctx.folder.save_state(state)
            weights = handshake.initial_weights(ctx, state.plan.encoding)
            save_weights(ctx.folder.weights_path(0), weights)
        ctx.plan = state.plan
        ctx.rows = state.rows
        if state.plan.dp is not None and ctx.privacy is None:
            ctx.privacy = JobPrivacy(
                ctx.engine,
                self.job_id,
                ctx.job.risk_tier,
                state.plan,
                state.rows,
                tiers=ctx.governor.tiers(),
            )
        for number in range(start + 1, ctx.spec.rounds + 1):
            ctx.messenger.stage(f"round {number} of {ctx.spec.rounds}")
            weights, record = rounds.run_round(ctx, number, state.plan, weights)
            if self.progress is not None:
                self.progress.round_done(number, ctx.spec.rounds, record.metrics)
        return self.finish(state, weights)

    def finish(self, state: JobState, weights: Weights) -> dict[str, Any]:
        ctx = self.ctx
        digest = model_hash(weights)
        save_weights(ctx.folder.model_path, weights)
        ctx.governor.record_model(digest, ctx.spec.rounds)
        recorded = runs.rounds(ctx.engine, self.job_id)
        final: dict[str, Any] | None = next(
            (r.metrics.get("evaluation") for r in reversed(recorded) if "evaluation" in r.metrics),
            {},
        )
        companies = {
            company: {
                "local": state.baselines.get(company),
                "federated": (final or {}).get("companies", {}).get(company),
            }
            for company in ctx.spec.companies
        }
        result: dict[str, Any] = {
            "model_hash": digest,
            "rounds": len([r for r in recorded if r.status == "completed"]),
            "threshold": state.plan.threshold,
            "input_dim": state.plan.encoding.input_dim,
            "companies": companies,
            "mean_auc": {
                "local": mean_defined([(v["local"] or {}).get("auc") for v in companies.values()]),
                "federated": mean_defined(
                    [(v["federated"] or {}).get("auc") for v in companies.values()]
                ),
            },
        }
        outcome = conclusion.release(ctx, state, weights, digest, result["rounds"])
        result["assessment"] = outcome.assessment.to_json()
        result["contributions"] = outcome.contributions
        result["release"] = outcome.summary()
        cpu, wall = self.started
        # The coordinator's own side of the job, metered like the nodes' (not billed to them).
        result["metering"] = {"coordinator": {
            "cpu_seconds": round(cpu_seconds() - cpu, 3),
            "wall_seconds": round(time.perf_counter() - wall, 3),
        }}  # fmt: skip
        runs.complete(
            ctx.engine, self.job_id, digest, json.loads(json.dumps(result, default=float))
        )
        ctx.messenger.stage("job completed")
        return result
