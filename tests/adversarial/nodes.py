"""A malicious coordinator against real company nodes: crafted tasks for a high-tier job
(DP and SecAgg+, approved), sent to the company's own ClientApp built from its own folder.

Every attack is one function of the honest task (plan, warrant, task kind) into a forged
one. The tests send them straight to the app in this process (where every read of a vault
is counted), through Flower's simulation engine with a malicious ServerApp, and, for the
deployment engine, from the tests in ``tests/deployment``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from coordinator.runner import JobRunner
from sandbox import identity
from sandbox.config import Settings
from sandbox.db import get_engine
from sandbox.learning.encoding import FeatureSpec
from sandbox.learning.models import build_model, get_weights
from sandbox.node.home import NodeHome
from sandbox.node.locallog import HashChainLog
from sandbox.protocol.jobspec import DifferentialPrivacySpec
from sandbox.protocol.messages import (
    ARRAYS,
    CONFIG,
    TASK_BASELINE,
    TASK_EVALUATE,
    TASK_EVALUATE_MODELS,
    TASK_STATS,
    TASK_TRAIN,
    WARRANT,
    TrainingPlan,
    stack_models,
    to_array_record,
)
from sandbox.protocol.warrant import Warrant, approval_statement
from sandbox.registry.models import Job
from sandbox.services import runs

HIGH = ["Hospital services", "Finance insurance and real estate", "Medical except hospital"]
HIGH_TIER_JOB: dict[str, Any] = {
    "purpose": "income-prediction",
    "rounds": 2,
    "local_epochs": 1,
    "min_participants": 3,
    "privacy": {"secure_aggregation": True, "dp": {"epsilon": 3.0}},
}


@dataclass(frozen=True)
class Task:
    kind: str
    plan: TrainingPlan
    warrant: str
    round: int = 1
    models: int = 0

    def message(self, weights: dict[str, Any], node_id: int = 1) -> Message:
        config = ConfigRecord(
            {
                "task": self.kind,
                "job-id": self.plan.job_id,
                "round": self.round,
                "plan": self.plan.model_dump_json(),
                WARRANT: self.warrant,
            }
        )
        content = RecordDict({CONFIG: config})
        if self.kind == TASK_EVALUATE_MODELS:
            content[ARRAYS] = to_array_record(stack_models([weights] * max(self.models, 1)))
        elif self.kind in (TASK_TRAIN, TASK_EVALUATE):
            content[ARRAYS] = to_array_record(weights)
        kind = {TASK_TRAIN: MessageType.TRAIN, TASK_EVALUATE: MessageType.EVALUATE}.get(
            self.kind, MessageType.QUERY
        )
        return Message(content, dst_node_id=node_id, message_type=kind)


@dataclass(frozen=True)
class Honest:
    """The honest task of the job and what a forger can use: the operator's key (the
    operator misbehaves) and another job's warrant."""

    settings: Settings
    job: Job
    plan: TrainingPlan
    warrant: Warrant
    other_warrant: str

    @property
    def task(self) -> Task:
        return Task(TASK_EVALUATE, self.plan, self.warrant.text())

    def weights(self) -> dict[str, Any]:
        return get_weights(build_model("logreg", self.plan.encoding.input_dim, seed=0))

    def resigned(self, **changes: Any) -> str:
        """A warrant with ``changes``, signed again with the operator's own key."""
        operator = identity.sandbox_key(self.settings.keys_dir, "operator")
        return self.warrant.model_copy(update=changes).signed(operator).text()

    def colluding(self, privacy: dict[str, Any] | None = None, code_bundle: str = "") -> str:
        """A warrant with other privacy terms or another code bundle, its approval signed
        again by the installation's regulator and the whole by the operator: both keys
        misbehave."""
        spec = {**self.warrant.spec, "privacy": {**self.warrant.spec["privacy"], **(privacy or {})}}
        digest = spec_hash_of(spec)
        bundle = code_bundle or self.warrant.code_bundle
        approval = self.warrant.approval
        assert approval is not None
        regulator = identity.sandbox_key(self.settings.keys_dir, "regulator")
        statement = approval_statement(
            self.warrant.job_id, digest, bundle, approval.regulator, approval.time,
            approval.note_sha256,
        )  # fmt: skip
        signed = approval.model_copy(update={"signature": identity.sign(regulator, statement)})
        return self.resigned(spec=spec, spec_hash=digest, code_bundle=bundle, approval=signed)

    def under(self, warrant: str, **plan_changes: Any) -> Task:
        """The honest task under another warrant, its plan made to match it (as a coordinator
        that forges consistently would)."""
        digest = Warrant.parse(warrant).digest()
        plan = self.plan.model_copy(update={"warrant": digest, **plan_changes})
        return Task(self.task.kind, plan, warrant)


def honest_task(settings: Settings, job: Job, other: Job) -> Honest:
    """The plan the governed coordinator would send for ``job`` (a DP job: the numeric
    columns scaled by public bounds), with its warrant."""
    runner = JobRunner(settings, get_engine(settings.database_url), None, job.id)  # type: ignore[arg-type]
    manifests = runs.manifests(runner.ctx.engine, job)
    spec = runner.ctx.spec
    encoding = FeatureSpec.from_manifests(manifests, spec.features).with_public_bounds()
    plan = runner.ctx.base_plan(encoding, threshold=0.1)
    assert job.warrant is not None and other.warrant is not None
    return Honest(settings, job, plan, Warrant.parse(job.warrant), other.warrant)


Forgery = Callable[[Honest], Task]


def _plan(honest: Honest, **changes: Any) -> Task:
    return replace(honest.task, plan=honest.plan.model_copy(update=changes))


ATTACKS: dict[str, tuple[Forgery, str]] = {
    "a plan without DP in a DP job": (lambda h: _plan(h, dp=None), "plan-differs"),
    "more epsilon than filed": (
        lambda h: _plan(h, dp=DifferentialPrivacySpec(epsilon=30.0)),
        "plan-differs",
    ),
    "less noise than filed (a larger clipping norm)": (
        lambda h: _plan(h, dp=DifferentialPrivacySpec(epsilon=3.0, max_grad_norm=50.0)),
        "plan-differs",
    ),
    "SecAgg+ off in a high-tier job": (
        lambda h: replace(_plan(h, secure_aggregation=False), kind=TASK_TRAIN),
        "plan-differs",
    ),
    "a warrant with SecAgg+ off, signed by the operator alone": (
        lambda h: h.under(
            h.resigned(spec=_off(h.warrant.spec), spec_hash=spec_hash_of(_off(h.warrant.spec))),
            secure_aggregation=False,
        ),
        "warrant",
    ),
    "SecAgg+ off and no DP under a warrant both keys signed": (
        lambda h: h.under(
            h.colluding({"secure_aggregation": False, "dp": None}),
            secure_aggregation=False,
            dp=None,
        ),
        "policy",
    ),
    "a warrant that files a high-tier job as low-risk": (
        lambda h: h.under(h.resigned(tier="low")),
        "tier",
    ),
    "another purpose": (lambda h: _plan(h, purpose="marketing"), "plan-differs"),
    "another dataset": (lambda h: _plan(h, dataset="payroll"), "not-in-warrant"),
    "code that is not the filed bundle": (
        lambda h: h.under(h.colluding(code_bundle="ab" * 32), code_bundle="ab" * 32),
        "code-bundle",
    ),
    "a warrant signed by the wrong key": (
        lambda h: replace(
            h.task, warrant=h.warrant.model_copy().signed(identity.generate_key()).text()
        ),
        "warrant",
    ),
    "a warrant of another job": (
        lambda h: replace(h.task, warrant=h.other_warrant),
        "warrant-job",
    ),
    "a request for exact feature statistics in a DP job": (
        lambda h: replace(h.task, kind=TASK_STATS),
        "task",
    ),
    "coalition scoring in a job under SecAgg+ (its spec allows none)": (
        lambda h: replace(h.task, kind=TASK_EVALUATE_MODELS, models=2),
        "task",
    ),
}  # fmt: skip
"""Each attack and the cause the node names when it refuses it."""

REPEATED: dict[str, tuple[str, int, str]] = {
    # The baseline (its metrics leave the node, so it is trained under DP and paid for) is
    # served once per job; a second request for it is refused.
    "a second request for the local-only baseline's metrics in a DP job": (
        TASK_BASELINE,
        1,
        "scoring",
    ),
    # One evaluation per round (two rounds) and two more (the initial model, a retry).
    "more scoring tasks than the spec allows": (TASK_EVALUATE, 4, "scoring"),
}
"""Tasks the spec allows a number of times: (task, times allowed, cause of the refusal)."""


def _off(spec: dict[str, Any]) -> dict[str, Any]:
    return {**spec, "privacy": {**spec["privacy"], "secure_aggregation": False}}


def spec_hash_of(spec: dict[str, Any]) -> str:
    from sandbox.protocol.jobspec import JobSpec

    return JobSpec.model_validate(spec).spec_hash


def refusals_in_log(node: NodeHome) -> list[dict[str, Any]]:
    return [line.event for line in HashChainLog(node.local_log_path).read()
            if line.event.get("kind") == "refused"]  # fmt: skip


def data_uses(node: NodeHome) -> list[dict[str, Any]]:
    return [line.event for line in HashChainLog(node.local_log_path).read()
            if line.event.get("kind") == "data-use"]  # fmt: skip
