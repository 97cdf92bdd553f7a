"""One job, run round by round over a Flower Grid.

The runner never opens a company's data. It learns which node is which company from a
signed challenge, computes the encoding's statistics from sums the companies send, asks each
company for its local-only baseline, then runs the rounds: select, send, validate every
reply against the protocol's allow-list, aggregate with the job's strategy, evaluate, and
persist the round (record and model) before the next one starts, so that a restarted
coordinator resumes after its last completed round.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from sqlalchemy.engine import Engine

from coordinator.strategies import make_strategy
from sandbox import identity
from sandbox.config import Settings
from sandbox.data.manifest import DatasetManifest
from sandbox.jobspec import JobSpec
from sandbox.learning.encoding import ColumnMoments, FeatureSpec
from sandbox.learning.metrics import mean_defined
from sandbox.learning.models import build_model, get_weights
from sandbox.node import write_json_atomic
from sandbox.protocol import (
    ARRAYS,
    CONFIG,
    IDENTITY,
    METRICS,
    STATS,
    TASK_BASELINE,
    TASK_EVALUATE,
    TASK_IDENTIFY,
    TASK_STATS,
    TASK_TRAIN,
    TrainingPlan,
    TrainSettings,
    check_reply,
    from_array_record,
    identity_challenge,
    to_array_record,
)
from sandbox.registry import service
from sandbox.registry.models import Round, utcnow

log = logging.getLogger("sandbox.coordinator")

NODE_WAIT_S = 60.0


class JobStopped(RuntimeError):
    """The job cannot go on (too few participants, no nodes); the reason is recorded."""


class Progress(Protocol):
    def stage(self, name: str) -> None: ...

    def round_done(self, number: int, total: int, summary: dict[str, Any]) -> None: ...


ReplyObserver = Callable[[str, str, RecordDict], None]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def node_error(reason: str) -> str:
    """The node's own words from an error reply, without the transport's wrapping."""
    text = _ANSI.sub("", reason or "")
    if "Message: " in text:
        text = text.rsplit("Message: ", 1)[1]
    return " ".join(text.split())[:300] or "unspecified error"


def model_hash(weights: dict[str, np.ndarray]) -> str:
    """SHA-256 over the arrays in name order, each with its dtype and shape."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        value = np.ascontiguousarray(weights[name])
        digest.update(f"{name}|{value.dtype.str}|{value.shape}\n".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def save_weights(path: Path, weights: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **weights)
    tmp.replace(path)


def load_weights(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


@dataclass
class Exchange:
    """Replies to one task: accepted contents by company, and who did not answer or was
    refused, with reasons."""

    accepted: dict[str, Message] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)


@dataclass
class JobState:
    """What a resumed coordinator needs: the plan, the baselines and the last round."""

    plan: TrainingPlan
    baselines: dict[str, dict[str, float]]

    def to_json(self) -> dict[str, Any]:
        return {"plan": self.plan.model_dump(mode="json"), "baselines": self.baselines}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> JobState:
        return cls(plan=TrainingPlan.model_validate(raw["plan"]), baselines=raw["baselines"])


class JobRunner:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        grid: Grid,
        job_id: str,
        progress: Progress | None = None,
        observer: ReplyObserver | None = None,
    ):
        self.settings = settings
        self.engine = engine
        self.grid = grid
        self.job_id = job_id
        self.progress = progress
        self.observer = observer
        self.job = service.get_job(engine, job_id)
        self.spec: JobSpec = service.job_spec(self.job)
        self.run_dir = settings.runs_dir / job_id
        self.nodes: dict[str, int] = {}
        self.strategy = make_strategy(self.spec.strategy)

    # ----------------------------------------------------------------- messaging
    def _stage(self, name: str) -> None:
        log.info("job %s: %s", self.job_id, name)
        if self.progress is not None:
            self.progress.stage(name)

    def _exchange(
        self,
        task: str,
        companies: Iterable[str],
        config: dict[str, Any],
        arrays: dict[str, np.ndarray] | None = None,
        expected_arrays: dict[str, tuple[int, ...]] | None = None,
    ) -> Exchange:
        """Send ``task`` to ``companies`` and sort the replies. Every reply is checked
        against the protocol's allow-list before anyone looks at its values."""
        message_type = {TASK_TRAIN: MessageType.TRAIN, TASK_EVALUATE: MessageType.EVALUATE}.get(
            task, MessageType.QUERY
        )
        targets = {self.nodes[c]: c for c in companies}
        record: dict[str, Any] = {
            CONFIG: ConfigRecord({"task": task, "job-id": self.job_id, **config})
        }
        if arrays is not None:
            record[ARRAYS] = to_array_record(arrays)
        messages = [
            Message(RecordDict(record), dst_node_id=node_id, message_type=message_type)
            for node_id in targets
        ]
        replies = self.grid.send_and_receive(messages, timeout=self.spec.round_timeout_s)
        outcome = Exchange()
        for reply in replies:
            company = targets.get(reply.metadata.src_node_id)
            if company is None:
                continue
            if reply.has_error():
                outcome.missing[company] = f"error at the node: {node_error(reply.error.reason)}"
                continue
            if self.observer is not None:
                self.observer(task, company, reply.content)
            problems = check_reply(task, reply.content, expected_arrays)
            if problems:
                outcome.rejected[company] = "; ".join(problems)[:1000]
                continue
            outcome.accepted[company] = reply
        for company in targets.values():
            if company not in outcome.accepted and company not in outcome.rejected:
                outcome.missing.setdefault(company, "no reply within the round timeout")
        return outcome

    # ------------------------------------------------------------------- set-up
    def identify(self) -> None:
        """Map companies to node ids by a signed challenge checked against the registry."""
        self._stage("identifying company nodes")
        wanted = set(self.spec.companies)
        deadline = time.monotonic() + NODE_WAIT_S
        node_ids: list[int] = []
        while time.monotonic() < deadline:
            node_ids = list(self.grid.get_node_ids())
            if len(node_ids) >= len(wanted):
                break
            time.sleep(1.0)
        if not node_ids:
            raise JobStopped("no company node is connected")
        nonce = secrets.token_hex(16)
        messages = [
            Message(
                RecordDict(
                    {
                        CONFIG: ConfigRecord(
                            {
                                "task": TASK_IDENTIFY,
                                "job-id": self.job_id,
                                "nonce": nonce,
                                "dataset": self.spec.dataset,
                            }
                        )
                    }
                ),
                dst_node_id=node_id,
                message_type=MessageType.QUERY,
            )
            for node_id in node_ids
        ]
        replies = self.grid.send_and_receive(messages, timeout=self.spec.round_timeout_s)
        claimed: dict[str, list[int]] = {}
        challenge = identity_challenge(self.job_id, nonce)
        for reply in replies:
            if reply.has_error():
                continue
            if self.observer is not None:
                self.observer(TASK_IDENTIFY, f"node-{reply.metadata.src_node_id}", reply.content)
            if check_reply(TASK_IDENTIFY, reply.content):
                continue
            claim = reply.content.config_records[IDENTITY]
            company_id = str(claim["company-id"])
            if company_id not in wanted:
                continue
            registered = service.get_company(self.engine, company_id).public_key
            if claim["public-key"] != registered:
                log.warning("node claiming %s presented a key not in the registry", company_id)
                continue
            if not identity.verify(registered, challenge, str(claim["signature"])):
                log.warning("node claiming %s failed the identity challenge", company_id)
                continue
            claimed.setdefault(company_id, []).append(reply.metadata.src_node_id)
        for company_id, ids in claimed.items():
            if len(ids) == 1:
                self.nodes[company_id] = ids[0]
            else:
                log.warning("%d nodes claim %s; none is used", len(ids), company_id)

    def manifests(self) -> list[DatasetManifest]:
        return [
            DatasetManifest.model_validate(
                service.get_dataset(self.engine, c, self.spec.dataset).manifest
            )
            for c in self.spec.companies
        ]

    def base_plan(self, encoding: FeatureSpec, threshold: float = 0.5) -> TrainingPlan:
        spec = self.spec
        return TrainingPlan(
            job_id=self.job_id,
            purpose=spec.purpose,
            engineer=self.job.filed_by,
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
            secure_aggregation=spec.privacy.secure_aggregation,
            rounds=spec.rounds,
            code_bundle=self.job.bundle_hash,
        )

    def prepare(self) -> JobState:
        """Encoding statistics from sums and counts, then every company's local baseline."""
        encoding = FeatureSpec.from_manifests(self.manifests(), self.spec.features)
        self._stage("computing feature statistics from company sums")
        draft = self.base_plan(encoding)
        exchange = self._exchange(
            TASK_STATS, self.participants(), {"plan": draft.model_dump_json()}
        )
        self._require(exchange.accepted, "feature statistics", exchange)
        totals: dict[str, ColumnMoments] = {}
        rows = positives = 0.0
        for reply in exchange.accepted.values():
            stats = reply.content.metric_records[STATS]
            rows += float(stats["rows"])
            positives += float(stats["positives"])
            for feature in encoding.numeric:
                moments = ColumnMoments(
                    count=float(stats[f"count/{feature.name}"]),
                    total=float(stats[f"sum/{feature.name}"]),
                    total_sq=float(stats[f"sumsq/{feature.name}"]),
                )
                totals[feature.name] = (
                    totals[feature.name] + moments if feature.name in totals else moments
                )
        if rows <= 0:
            raise JobStopped("the participants hold no training rows")
        plan = self.base_plan(encoding.with_moments(totals), threshold=positives / rows)
        self._stage("training local-only baselines at each company")
        exchange = self._exchange(
            TASK_BASELINE, self.participants(), {"plan": plan.model_dump_json()}
        )
        baselines = {
            company: dict(reply.content.metric_records[METRICS])
            for company, reply in exchange.accepted.items()
        }
        return JobState(plan=plan, baselines=baselines)

    # ------------------------------------------------------------------- rounds
    def participants(self) -> list[str]:
        """Companies asked to take part in the next step: the job's companies whose node
        proved its identity."""
        return [c for c in self.spec.companies if c in self.nodes]

    def _require(self, accepted: dict[str, Any], what: str, exchange: Exchange) -> None:
        if len(accepted) < self.spec.min_participants:
            reasons = {**exchange.missing, **exchange.rejected}
            detail = "; ".join(f"{c}: {r}" for c, r in sorted(reasons.items()))
            raise JobStopped(
                f"{what}: {len(accepted)} companies took part, fewer than the minimum "
                f"{self.spec.min_participants}" + (f" ({detail})" if detail else "")
            )

    def run_round(
        self, number: int, plan: TrainingPlan, weights: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], Round]:
        asked = self.participants()
        config = {"round": number, "plan": plan.model_dump_json()}
        shapes = {name: tuple(value.shape) for name, value in weights.items()}
        started = utcnow()
        exchange = self._exchange(TASK_TRAIN, asked, config, weights, expected_arrays=shapes)
        try:
            self._require(exchange.accepted, f"round {number}", exchange)
        except JobStopped:
            self._store_round(number, "failed", asked, exchange, {}, started)
            raise
        # Flower's median and trimmed-mean strategies empty the arrays of the replies they are
        # given; aggregate copies so that the accepted updates stay intact for the record.
        copies = [copy.deepcopy(reply) for reply in exchange.accepted.values()]
        aggregated, train_metrics = self.strategy.aggregate_train(number, copies)
        if aggregated is None:
            self._store_round(number, "failed", asked, exchange, {}, started)
            raise JobStopped(f"round {number}: the strategy produced no aggregate")
        new_weights = {
            name: value.astype(np.float32) for name, value in from_array_record(aggregated).items()
        }
        metrics: dict[str, Any] = {"train": dict(train_metrics or {})}
        if number % self.spec.evaluate_every == 0 or number == self.spec.rounds:
            metrics["evaluation"] = self.evaluate(plan, new_weights, list(exchange.accepted))
        record = self._store_round(number, "completed", asked, exchange, metrics, started)
        return new_weights, record

    def evaluate(
        self, plan: TrainingPlan, weights: dict[str, np.ndarray], companies: list[str]
    ) -> dict[str, Any]:
        exchange = self._exchange(
            TASK_EVALUATE, companies, {"plan": plan.model_dump_json()}, weights
        )
        per_company = {
            c: dict(r.content.metric_records[METRICS]) for c, r in exchange.accepted.items()
        }
        return {
            "companies": per_company,
            "mean_auc": mean_defined([m.get("auc") for m in per_company.values()]),
            "mean_balanced_accuracy": mean_defined(
                [m.get("balanced-accuracy") for m in per_company.values()]
            ),
        }

    def _store_round(
        self,
        number: int,
        status: str,
        asked: list[str],
        exchange: Exchange,
        metrics: dict[str, Any],
        started: Any,
    ) -> Round:
        record = Round(
            job_id=self.job_id,
            number=number,
            status=status,
            asked=asked,
            took_part=sorted(exchange.accepted),
            missing=[{"company": c, "reason": r} for c, r in sorted(exchange.missing.items())],
            rejected=[{"company": c, "reason": r} for c, r in sorted(exchange.rejected.items())],
            metrics=json.loads(json.dumps(metrics, default=float)),
            started_at=started,
            ended_at=utcnow(),
        )
        return service.record_round(self.engine, record, completed=status == "completed")

    # --------------------------------------------------------------------- main
    def _state_path(self) -> Path:
        return self.run_dir / "state.json"

    def _weights_path(self, number: int) -> Path:
        return self.run_dir / f"weights-round-{number:04d}.npz"

    def run(self) -> dict[str, Any]:
        service.set_job_status(
            self.engine, self.job_id, "running", started_at=self.job.started_at or utcnow()
        )
        try:
            result = self._run()
        except JobStopped as exc:
            log.warning("job %s stopped: %s", self.job_id, exc)
            service.set_job_status(
                self.engine, self.job_id, "stopped", reason=str(exc), ended_at=utcnow()
            )
            raise
        except Exception as exc:
            service.set_job_status(
                self.engine,
                self.job_id,
                "failed",
                reason=f"{type(exc).__name__}: {exc}"[:2000],
                ended_at=utcnow(),
            )
            raise
        return result

    def _run(self) -> dict[str, Any]:
        self.identify()
        if len(self.participants()) < self.spec.min_participants:
            missing = sorted(set(self.spec.companies) - set(self.nodes))
            raise JobStopped(
                f"only {len(self.participants())} company nodes proved their identity, fewer than "
                f"the minimum {self.spec.min_participants}; not reachable: {', '.join(missing)}"
            )
        start = self.job.rounds_completed
        if start > 0 and self._state_path().exists():
            state = JobState.from_json(json.loads(self._state_path().read_text()))
            weights = load_weights(self._weights_path(start))
            self._stage(f"resuming after round {start}")
        else:
            start = 0
            state = self.prepare()
            write_json_atomic(self._state_path(), state.to_json())
            weights = get_weights(
                build_model(
                    self.spec.model.kind,
                    state.plan.encoding.input_dim,
                    self.spec.model.hidden,
                    self.spec.seed,
                )
            )
            save_weights(self._weights_path(0), weights)
        for number in range(start + 1, self.spec.rounds + 1):
            self._stage(f"round {number} of {self.spec.rounds}")
            weights, record = self.run_round(number, state.plan, weights)
            save_weights(self._weights_path(number), weights)
            if self.progress is not None:
                self.progress.round_done(number, self.spec.rounds, record.metrics)
        return self.finish(state, weights)

    def finish(self, state: JobState, weights: dict[str, np.ndarray]) -> dict[str, Any]:
        digest = model_hash(weights)
        save_weights(self.run_dir / "model.npz", weights)
        rounds = service.job_rounds(self.engine, self.job_id)
        final = next(
            (r.metrics.get("evaluation") for r in reversed(rounds) if "evaluation" in r.metrics), {}
        )
        companies = {}
        for company in self.spec.companies:
            companies[company] = {
                "local": state.baselines.get(company),
                "federated": (final or {}).get("companies", {}).get(company),
            }
        result = {
            "model_hash": digest,
            "rounds": len([r for r in rounds if r.status == "completed"]),
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
        service.set_job_status(
            self.engine,
            self.job_id,
            "completed",
            model_hash=digest,
            result=result,
            ended_at=utcnow(),
        )
        self._stage("job completed")
        return result
