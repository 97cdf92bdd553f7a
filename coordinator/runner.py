"""One job, run round by round over a Flower Grid.

The runner never opens a company's data. It learns which node is which company from a
signed challenge, computes the encoding's statistics from sums the companies send, asks each
company for its local-only baseline, then runs the rounds: select (through the selector hook,
with each company's privacy budget as facts; under governance the policy engine decides),
charge the privacy the round will cost, send, validate every reply against the protocol's
allow-list and every update against the job's norm bound, aggregate with the job's strategy
(or through SecAgg+, when the job requires secure aggregation), evaluate, and persist the
round (record and model) before the next one starts, so that a restarted coordinator resumes
after its last completed round. Each round's accepted updates are kept in the run folder for
the contribution estimate.

At the end: the release assessment at each company, the contribution estimate from the
stored updates, the release decision (``ReleaseGate``), the export (only when allowed) and
the decision's record (``ReleaseRecorder``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from sqlalchemy.engine import Engine

from coordinator.contribution import (
    ContributionSettings,
    ContributionUnavailable,
    UpdateStore,
    Weights,
    estimate_contributions,
    volume_shares,
)
from coordinator.errors import node_error
from coordinator.governed import LedgerReleaseRecorder, PolicyGate, Recorders, RoundGovernor
from coordinator.privacy import JobPrivacy
from coordinator.release import (
    Assessment,
    RegistryRecorder,
    ReleaseGate,
    ReleaseOutcome,
    ReleaseRecorder,
    build_assessment,
    conclude_release,
    privacy_summary,
)
from coordinator.secure import SecureRound, clipping_range, secure_round
from coordinator.selection import (
    ParticipantSelector,
    SelectionRequest,
    apply_selection,
    budget_selector,
)
from coordinator.strategies import make_strategy
from sandbox import identity
from sandbox.config import Settings
from sandbox.data.manifest import DatasetManifest
from sandbox.governance import Governance
from sandbox.jobspec import JobSpec
from sandbox.learning.encoding import ColumnMoments, FeatureSpec
from sandbox.learning.metrics import mean_defined
from sandbox.learning.models import build_model, get_weights
from sandbox.learning.robustness import RobustnessSettings
from sandbox.node import write_json_atomic
from sandbox.privacy.budget import shipped_tiers
from sandbox.protocol import (
    ARRAYS,
    CONFIG,
    IDENTITY,
    METRICS,
    STATS,
    TASK_ASSESS,
    TASK_BASELINE,
    TASK_EVALUATE,
    TASK_EVALUATE_MODELS,
    TASK_IDENTIFY,
    TASK_STATS,
    TASK_TRAIN,
    TrainingPlan,
    TrainSettings,
    check_reply,
    check_update_norm,
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
    with tmp.open("rb") as written:
        os.fsync(written.fileno())
    tmp.replace(path)


def load_weights(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


@dataclass
class Exchange:
    """Replies to one task: accepted contents by company, and who did not answer or was
    refused, with reasons. ``replies`` keeps every reply that arrived (accepted or not): a
    refused update may still have cost its company privacy. In a securely aggregated round
    ``masked`` holds the clear-text records of the companies in the aggregate instead."""

    accepted: dict[str, Message] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    replies: dict[str, RecordDict] = field(default_factory=dict)
    masked: dict[str, RecordDict] = field(default_factory=dict)
    receipts: dict[str, Any] = field(default_factory=dict)

    def contents(self) -> dict[str, RecordDict]:
        """The contents of the replies taken so far: accepted, or inside a secure aggregate."""
        return {**{c: m.content for c, m in self.accepted.items()}, **self.masked}

    @property
    def took_part(self) -> list[str]:
        return sorted({*self.accepted, *self.masked})

    def reject(self, company: str, problems: list[str]) -> None:
        self.accepted.pop(company, None)
        self.masked.pop(company, None)
        earlier = self.rejected.get(company)
        self.rejected[company] = "; ".join([*([earlier] if earlier else []), *problems])[:1000]


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
        selector: ParticipantSelector = budget_selector,
        governance: Governance | None = None,
        release_gate: ReleaseGate | None = None,
        release_recorder: ReleaseRecorder | None = None,
        robustness: RobustnessSettings | None = None,
        contribution: ContributionSettings | None = None,
    ):
        self.settings = settings
        self.engine = engine
        self.grid = grid
        self.job_id = job_id
        self.progress = progress
        self.observer = observer
        self.context = context
        self.selector = selector
        self.job = service.get_job(engine, job_id)
        self.spec: JobSpec = service.job_spec(self.job)
        self.run_dir = settings.runs_dir / job_id
        self.nodes: dict[str, int] = {}
        self.strategy = make_strategy(self.spec.strategy)
        self.rows: dict[str, int] = {}
        self.privacy: JobPrivacy | None = None
        self.plan: TrainingPlan | None = None
        # Under governance every step's participants are decided by the policy engine and
        # every reply must carry its company's signed receipt.
        self.governor = RoundGovernor(governance, self.job, self.spec) if governance else None
        if self.governor is not None:
            self.selector = self.governor.selector
        self.updates = UpdateStore(self.run_dir / "updates")
        self.release_gate = release_gate or PolicyGate(engine, self.job, self.spec, governance)
        registry_recorder = RegistryRecorder(engine)
        self.release_recorder = release_recorder or (
            Recorders(registry_recorder, LedgerReleaseRecorder(governance))
            if governance is not None
            else registry_recorder
        )
        self.robustness = robustness or RobustnessSettings(seed=self.spec.seed)
        self.contribution = contribution or ContributionSettings(seed=self.spec.seed)

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
        round_number: int = 0,
        model_count: int | None = None,
    ) -> Exchange:
        """Send ``task`` to ``companies`` and sort the replies. Every reply is checked
        against the protocol's allow-list before anyone looks at its values; under
        governance its receipt too, and the receipts are recorded."""
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
        # A reply the link itself sends (an expired message) comes from the link's node id,
        # so replies are matched by the message they answer first, then by their sender.
        by_message = {m.object_id: targets[m.metadata.dst_node_id] for m in messages}
        replies = self.grid.send_and_receive(messages, timeout=self.spec.round_timeout_s)
        outcome = Exchange()
        for reply in replies:
            company = by_message.get(reply.metadata.reply_to_message_id) or targets.get(
                reply.metadata.src_node_id
            )
            if company is None:
                continue
            if reply.has_error():
                outcome.missing[company] = f"error at the node: {node_error(reply.error.reason)}"
                continue
            if self.observer is not None:
                self.observer(task, company, reply.content)
            outcome.replies[company] = reply.content
            problems = check_reply(task, reply.content, expected_arrays, model_count=model_count)
            if problems:
                outcome.rejected[company] = "; ".join(problems)[:1000]
                continue
            outcome.accepted[company] = reply
        for company in targets.values():
            if company not in outcome.accepted and company not in outcome.rejected:
                outcome.missing.setdefault(company, "no reply within the round timeout")
        self._receipts(task, round_number, outcome)
        return outcome

    def _receipts(self, task: str, round_number: int, exchange: Exchange) -> None:
        if self.governor is not None:
            self.governor.verify(task, round_number, exchange)
            self.governor.record_exchange(task, round_number, exchange)

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
        # The first exchange also wakes the engine (the simulation's workers, a deployed
        # node's first app process): it gets at least the node wait, not just a round's time.
        replies = self.grid.send_and_receive(
            messages, timeout=max(self.spec.round_timeout_s, NODE_WAIT_S)
        )
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
            rounds=spec.rounds,
            max_update_norm=spec.privacy.max_update_norm,
            secure_aggregation=spec.privacy.secure_aggregation,
            code_bundle=self.job.bundle_hash,
        )

    def prepare(self) -> JobState:
        """Encoding statistics from sums and counts, then every company's local baseline."""
        encoding = FeatureSpec.from_manifests(self.manifests(), self.spec.features)
        self._stage("computing feature statistics from company sums")
        draft = self.base_plan(encoding)
        asked, sat_out = self.select(0, draft)
        exchange = self._exchange(TASK_STATS, asked, {"plan": draft.model_dump_json()})
        exchange.missing.update(sat_out)
        self._require(exchange.accepted, "feature statistics", exchange)
        totals: dict[str, ColumnMoments] = {}
        rows = positives = 0.0
        per_company: dict[str, int] = {}
        for company, reply in exchange.accepted.items():
            stats = reply.content.metric_records[STATS]
            per_company[company] = int(stats["rows"])
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
            TASK_BASELINE, sorted(exchange.accepted), {"plan": plan.model_dump_json()}
        )
        baselines = {
            company: dict(reply.content.metric_records[METRICS])
            for company, reply in exchange.accepted.items()
        }
        return JobState(plan=plan, baselines=baselines, rows=per_company)

    # ------------------------------------------------------------------- rounds
    def participants(self) -> list[str]:
        """Companies asked to take part in the next step: the job's companies whose node
        proved its identity."""
        return [c for c in self.spec.companies if c in self.nodes]

    def _require(self, accepted: Collection[str], what: str, exchange: Exchange) -> None:
        if len(accepted) < self.spec.min_participants:
            reasons = {**exchange.missing, **exchange.rejected}
            detail = "; ".join(f"{c}: {r}" for c, r in sorted(reasons.items()))
            raise JobStopped(
                f"{what}: {len(accepted)} companies took part, fewer than the minimum "
                f"{self.spec.min_participants}" + (f" ({detail})" if detail else "")
            )

    def select(self, number: int, plan: TrainingPlan) -> tuple[list[str], dict[str, str]]:
        """The companies asked this round, and the ones that sit it out with the reason.

        The selector decides on the budget facts; the privacy of each selected company's
        run is then charged (write-ahead), and a company whose charge is refused sits out too.
        Round 0 is the set-up (statistics and baselines) and the round after the last is
        the release (assessment and contributions): they train nothing, so they spend no
        privacy budget, but under governance they are decided like any round.
        """
        candidates = tuple(self.participants())
        training = 0 < number <= self.spec.rounds and plan.dp is not None
        request = SelectionRequest(
            job_id=self.job_id,
            purpose=self.spec.purpose,
            risk_tier=self.job.risk_tier,
            round=number,
            candidates=candidates,
            dp=training,
            budgets=self.privacy.facts(candidates, number)
            if self.privacy is not None and training
            else {},
        )
        selection = apply_selection(request, self.selector(request))
        asked, sat_out = list(selection.selected), dict(selection.sat_out)
        if self.privacy is not None and training:
            asked, refused = self.privacy.charge(asked, number)
            sat_out.update(refused)
        return asked, sat_out

    def run_round(
        self, number: int, plan: TrainingPlan, weights: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], Round]:
        started = utcnow()
        if plan.dp is not None and self.privacy is None:
            raise RuntimeError("a DP job's round cannot run without its privacy bookkeeping")
        asked, sat_out = self.select(number, plan)
        if len(asked) < self.spec.min_participants:
            if self.privacy is not None:
                self.privacy.release()  # no task goes out, so nothing was spent
            self._store_round(number, "failed", [], Exchange(), {}, started, sat_out)
            detail = "; ".join(f"{c}: {r}" for c, r in sorted(sat_out.items()))
            raise JobStopped(
                f"round {number}: {len(asked)} companies may take part, fewer than the minimum "
                f"{self.spec.min_participants}" + (f" ({detail})" if detail else "")
            )
        config = {"round": number, "plan": plan.model_dump_json()}
        metrics: dict[str, Any] = {}
        outcome: SecureRound | None = None
        if plan.secure_aggregation:
            exchange, outcome = self._secure_exchange(number, asked, config, weights, plan)
            metrics["secure_aggregation"] = outcome.summary()
        else:
            shapes = {name: tuple(value.shape) for name, value in weights.items()}
            exchange = self._exchange(
                TASK_TRAIN, asked, config, weights, expected_arrays=shapes, round_number=number
            )
            self._screen_updates(exchange, weights)
        if self.privacy is not None:
            metrics["privacy"] = self.privacy.round_summary()
        try:
            if outcome is not None:
                new_weights = self._secure_aggregate(number, exchange, outcome)
            self._require(exchange.took_part, f"round {number}", exchange)
            if outcome is None:
                new_weights = self._aggregate(number, exchange, metrics)
        except JobStopped:
            self._store_round(number, "failed", asked, exchange, metrics, started, sat_out)
            raise
        if outcome is None:
            # The accepted updates, kept for the contribution estimate (a secure round has
            # none: the coordinator only ever saw their sum).
            self.updates.save(
                number,
                weights,
                {
                    c: from_array_record(r.content.array_records[ARRAYS])
                    for c, r in exchange.accepted.items()
                },
                {
                    c: float(r.content.metric_records[METRICS]["num-examples"])
                    for c, r in exchange.accepted.items()
                },
            )
        if number % self.spec.evaluate_every == 0 or number == self.spec.rounds:
            metrics["evaluation"] = self.evaluate(plan, new_weights, exchange.took_part, number)
        # The round's model is on disk before the round counts as completed: a coordinator
        # killed in between resumes from the previous round and runs this one again.
        save_weights(self._weights_path(number), new_weights)
        record = self._store_round(number, "completed", asked, exchange, metrics, started, sat_out)
        return new_weights, record

    def _screen_updates(self, exchange: Exchange, weights: dict[str, np.ndarray]) -> None:
        """Settle each company's privacy charge from its reply and hold every accepted update
        to the job's norm bound; a reply that fails either is refused, with the reason."""
        bound = self.spec.privacy.max_update_norm
        for company, content in exchange.replies.items():
            problems = self.privacy.settle(company, content) if self.privacy is not None else []
            if company in exchange.accepted and bound is not None:
                update = from_array_record(content.array_records[ARRAYS])
                problems += check_update_norm(update, weights, bound)
            if problems:
                exchange.reject(company, problems)
        if self.privacy is not None:
            for company, reason in exchange.missing.items():
                self.privacy.settle(company, None, why_missing=reason)

    def _aggregate(
        self, number: int, exchange: Exchange, metrics: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        # Flower's median and trimmed-mean strategies empty the arrays of the replies they are
        # given; aggregate copies so that the accepted updates stay intact for the record.
        copies = [copy.deepcopy(reply) for reply in exchange.accepted.values()]
        aggregated, train_metrics = self.strategy.aggregate_train(number, copies)
        if aggregated is None:
            raise JobStopped(f"round {number}: the strategy produced no aggregate")
        metrics["train"] = dict(train_metrics or {})
        return {
            name: value.astype(np.float32) for name, value in from_array_record(aggregated).items()
        }

    def _round_context(self) -> Context:
        if self.context is not None:
            return self.context
        return Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={})

    def _secure_exchange(
        self,
        number: int,
        asked: list[str],
        config: dict[str, Any],
        weights: dict[str, np.ndarray],
        plan: TrainingPlan,
    ) -> tuple[Exchange, SecureRound]:
        """One round through SecAgg+: the coordinator gets the aggregate and, per company,
        only its clear-text metrics and receipt, which are checked like any reply."""
        by_node = {self.nodes[c]: c for c in asked}
        outcome = secure_round(
            self.grid,
            self._round_context(),
            list(by_node),
            weights,
            {"task": TASK_TRAIN, "job-id": self.job_id, **config},
            number,
            max_weight=float(max([self.rows.get(c, 0) for c in asked] + [1])),
            clipping_range=clipping_range(plan, max(self.rows.values(), default=1)),
            timeout=self.spec.round_timeout_s,
        )
        exchange = Exchange()
        for node_id, content in outcome.replies.items():
            company = by_node[node_id]
            if self.observer is not None:
                self.observer(TASK_TRAIN, company, content)
            exchange.replies[company] = content
            problems = check_reply(TASK_TRAIN, content, masked=True)
            if self.privacy is not None:
                problems += self.privacy.settle(company, content)
            if problems:
                exchange.reject(company, problems)
            else:
                exchange.masked[company] = content
        for node_id, problem in outcome.reply_problems.items():
            exchange.reject(by_node[node_id], [problem])
        self._receipts(TASK_TRAIN, number, exchange)
        for company in asked:
            if company not in exchange.masked and company not in exchange.rejected:
                exchange.missing[company] = (
                    f"no masked update in the aggregate ({outcome.reason or 'dropped out'})"
                )
                if self.privacy is not None:
                    self.privacy.settle(company, None, why_missing=exchange.missing[company])
        return exchange, outcome

    def _secure_aggregate(
        self, number: int, exchange: Exchange, outcome: SecureRound
    ) -> dict[str, np.ndarray]:
        """The aggregate, only if SecAgg+ completed and every company in it was accepted:
        an update inside the sum cannot be taken out again, so a refused reply fails the
        round."""
        if not outcome.completed or outcome.aggregate is None:
            raise JobStopped(f"round {number}: {outcome.reason}; the round is not used")
        if exchange.rejected:
            names = ", ".join(sorted(exchange.rejected))
            raise JobStopped(
                f"round {number}: the secure aggregate includes updates of companies whose "
                f"replies were refused ({names}); the round is not used"
            )
        return outcome.aggregate

    def evaluate(
        self,
        plan: TrainingPlan,
        weights: dict[str, np.ndarray],
        companies: list[str],
        round_number: int,
    ) -> dict[str, Any]:
        exchange = self._exchange(
            TASK_EVALUATE,
            companies,
            {"round": round_number, "plan": plan.model_dump_json()},
            weights,
            round_number=round_number,
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
        sat_out: dict[str, str] | None = None,
    ) -> Round:
        record = Round(
            job_id=self.job_id,
            number=number,
            status=status,
            asked=asked,
            took_part=exchange.took_part,
            missing=[{"company": c, "reason": r} for c, r in sorted(exchange.missing.items())],
            rejected=[{"company": c, "reason": r} for c, r in sorted(exchange.rejected.items())],
            sat_out=[{"company": c, "reason": r} for c, r in sorted((sat_out or {}).items())],
            metrics=json.loads(json.dumps(metrics, default=float)),
            started_at=started,
            ended_at=utcnow(),
        )
        stored = service.record_round(self.engine, record, completed=status == "completed")
        if self.governor is not None:
            self.governor.record_round(stored, self.plan)
        return stored

    # --------------------------------------------------------------------- main
    def _state_path(self) -> Path:
        return self.run_dir / "state.json"

    def _weights_path(self, number: int) -> Path:
        return self.run_dir / f"weights-round-{number:04d}.npz"

    def run(self) -> dict[str, Any]:
        if self.governor is not None:
            self.governor.check_start()
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
            if self.governor is not None:
                done = service.get_job(self.engine, self.job_id).rounds_completed
                self.governor.record_stop("too_few_participants", done)
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
            self.plan = state.plan
            weights = load_weights(self._weights_path(start))
            self._stage(f"resuming after round {start}")
        else:
            start = 0
            state = self.prepare()
            self.plan = state.plan
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
        self.rows = state.rows
        if state.plan.dp is not None:
            self.privacy = JobPrivacy(
                self.engine,
                self.job_id,
                self.job.risk_tier,
                state.plan,
                state.rows,
                tiers=self.governor.gov.tiers if self.governor is not None else None,
            )
        for number in range(start + 1, self.spec.rounds + 1):
            self._stage(f"round {number} of {self.spec.rounds}")
            weights, record = self.run_round(number, state.plan, weights)
            if self.progress is not None:
                self.progress.round_done(number, self.spec.rounds, record.metrics)
        return self.finish(state, weights)

    def finish(self, state: JobState, weights: dict[str, np.ndarray]) -> dict[str, Any]:
        digest = model_hash(weights)
        save_weights(self.run_dir / "model.npz", weights)
        if self.governor is not None:
            self.governor.record_model(digest, self.spec.rounds)
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
        release = self.release(state, weights, digest, result["rounds"])
        result["assessment"] = release.assessment.to_json()
        result["contributions"] = release.contributions
        result["release"] = release.summary()
        service.set_job_status(
            self.engine,
            self.job_id,
            "completed",
            model_hash=digest,
            result=json.loads(json.dumps(result, default=float)),
            ended_at=utcnow(),
        )
        self._stage("job completed")
        return result

    # ------------------------------------------------------------------ release
    def assess(self, state: JobState, weights: Weights) -> Assessment:
        """Every participant scores the final model on its own test split, clean and
        perturbed; only metrics come back."""
        self._stage("release assessment at each company")
        config = {
            "plan": state.plan.model_dump_json(),
            "robustness": self.robustness.model_dump_json(),
        }
        asked, sat_out = self.select(self.spec.rounds + 1, state.plan)
        exchange = self._exchange(TASK_ASSESS, asked, config, weights)
        exchange.missing.update(sat_out)
        not_assessed = {**exchange.missing, **exchange.rejected}
        for company in self.spec.companies:
            if company not in self.nodes:
                not_assessed[company] = "its node did not prove its identity"
        return build_assessment(
            self.spec.companies,
            {c: dict(r.content.metric_records[METRICS]) for c, r in exchange.accepted.items()},
            state.baselines,
            not_assessed,
            state.plan.encoding,
            self.robustness,
        )

    def contributions(self, state: JobState) -> dict[str, Any]:
        """Leave-one-out and Shapley estimates from the stored round updates; the coalition
        models are scored by the participants on their test splits (metrics only)."""
        self._stage("estimating each company's contribution")
        if state.plan.secure_aggregation:
            return volume_shares(
                {c: n for c, n in state.rows.items() if c in self.participants()},
                "the job used secure aggregation: the coordinator never saw a company's update, "
                "and comparing coalitions would reveal them, so the shares follow each "
                "company's training rows",
            ).to_json()
        companies, _ = self.select(self.spec.rounds + 1, state.plan)
        plan = state.plan.model_dump_json()

        def score(stacked: Weights, count: int) -> dict[str, dict[str, float]]:
            exchange = self._exchange(
                TASK_EVALUATE_MODELS, companies, {"plan": plan}, stacked, model_count=count
            )
            return {
                c: dict(r.content.metric_records[METRICS]) for c, r in exchange.accepted.items()
            }

        try:
            report = estimate_contributions(self.updates.games(), score, self.contribution)
        except ContributionUnavailable as exc:
            return {"error": str(exc)}
        out = report.to_json()
        if self.spec.strategy.name not in ("fedavg", "fedprox"):
            out["notes"].append(
                f"the job aggregated with {self.spec.strategy.name}; coalition models are "
                "reconstructed with FedAvg's weighted mean"
            )
        return out

    def release(
        self, state: JobState, weights: Weights, digest: str, rounds_completed: int
    ) -> ReleaseOutcome:
        """Assess, estimate contributions, decide, export if allowed, record."""
        assessment = self.assess(state, weights)
        contributions = self.contributions(state)
        datasets = [
            service.get_dataset(self.engine, c, self.spec.dataset) for c in self.spec.companies
        ]
        tiers = self.release_gate.tiers() if isinstance(self.release_gate, PolicyGate) else None
        tier = (
            self.job.risk_tier
            if self.governor is not None
            else (tiers or shipped_tiers()).risk_tier(
                [d.industry for d in datasets], [d.grade for d in datasets]
            )
        )
        self._stage(f"release decision ({tier} tier)")
        verdict = self.release_gate.decide(self.job_id, tier, assessment)
        return conclude_release(
            job=self.job,
            spec=self.spec,
            plan=state.plan,
            datasets=datasets,
            run_dir=self.run_dir,
            model_hash=digest,
            rounds_completed=rounds_completed,
            assessment=assessment,
            verdict=verdict,
            contributions=contributions,
            privacy=privacy_summary(self.spec, service.job_receipts(self.engine, self.job_id)),
            recorder=self.release_recorder,
        )
