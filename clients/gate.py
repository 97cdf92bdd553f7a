"""The company's own gate: a Flower mod around every task that reads the company's data.

Before the task runs, the gate works out the node's mandate from the job's warrant
(:mod:`clients.mandate`: signatures against the keys the node pinned, the company and
dataset in it, the filed spec, the filed code bundle hashed here, the plan exactly as the
spec makes it, the tier by the node's own reckoning), checks that the task is one the release
inventory allows in such a job (:mod:`clients.inventory`), and asks the policy engine (the
same Cedar policies as the sandbox, evaluated here with the company's own facts: its
manifest, its own record of the consents it granted, the job as its warrant files it)
whether the job may read the dataset. A refusal is written to the company's hash-chained
local log, signed as a notice, and travels back as the reply's error; no data is read.

While the task runs, the handlers find the mandate with :func:`active_mandate`: they take
every privacy parameter from it, and refuse to run without one. After the task, the gate
checks the reply against the release inventory, writes the use to the local log and attaches
a receipt signed with the company's key, binding the warrant, the plan, the round, the epsilon
the task spent and the node's running totals.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from flwr.app import ConfigRecord, Context, Error, Message
from flwr.clientapp.typing import ClientAppCallable, Mod

from clients import inventory
from clients.accountant import scoring_slot
from clients.mandate import Mandate, Refusal, mandate_for
from clients.metering import metered
from clients.witness import safe_witness_answer, witnessed_head
from policies.engine import Decision, PolicyDecisionPoint
from policies.facts import CompanyFacts, ConsentFacts, DatasetReadContext
from policies.policyset import LoadedPolicySet
from sandbox.node.home import NodeHome
from sandbox.node.locallog import HashChainLog
from sandbox.node.refusals import refuse
from sandbox.protocol.messages import (
    ARRAYS,
    CONFIG,
    METRICS,
    RECEIPT,
    STATS,
    TASK_BASELINE,
    TASK_EVALUATE,
    TASK_IDENTIFY,
    WARRANT,
    WITNESS,
    TrainingPlan,
    number,
)
from sandbox.protocol.notices import attach
from sandbox.protocol.receipts import ReceiptPayload, sign_receipt
from sandbox.utc import utcnow
from sandbox.vocabulary import dataset_id

GATE_REFUSED = 403
REFUSAL_PREFIX = "refused by the company's gate: "

_policy_set: LoadedPolicySet | None = None
_pdps: dict[str, PolicyDecisionPoint] = {}
_lock = threading.Lock()
_active: ContextVar[Mandate | None] = ContextVar("sandbox_node_mandate", default=None)
_spent: ContextVar[dict[str, float] | None] = ContextVar("sandbox_node_spent", default=None)


def shipped_policy_set() -> LoadedPolicySet:
    """The node's own copy of the policy set: the one installed with its code."""
    global _policy_set
    if _policy_set is None:
        _policy_set = LoadedPolicySet.from_dir()
    return _policy_set


def node_decision_point(node: NodeHome) -> PolicyDecisionPoint:
    """The node's own decision point; every decision goes to the company's local log."""
    key = str(node.folder)
    with _lock:
        pdp = _pdps.get(key)
        if pdp is None:
            log = HashChainLog(node.local_log_path)

            def record(decision: Decision) -> None:
                log.append({"kind": "decision", **decision.to_record()})

            pdp = PolicyDecisionPoint(shipped_policy_set(), record)
            _pdps[key] = pdp
        return pdp


def active_mandate() -> Mandate:
    """The mandate of the task being served; a handler without one refuses (no gate, no
    data)."""
    mandate = _active.get()
    if mandate is None:
        raise Refusal("no-gate", "this task did not pass the company's gate; no data is read")
    return mandate


def report_spend(totals: dict[str, float]) -> None:
    """The handler's note of the node's budgets after its DP run, for the receipt."""
    _spent.set(totals)


def reported_spend() -> dict[str, float] | None:
    return _spent.get()


@contextmanager
def serving(mandate: Mandate) -> Iterator[None]:
    """Make ``mandate`` the active one while a task is served (the gate does this)."""
    token = _active.set(mandate)
    spent = _spent.set(None)
    try:
        yield
    finally:
        _active.reset(token)
        _spent.reset(spent)


def task_name(message: Message) -> str:
    config = message.content.config_records.get(CONFIG)
    if config is not None and "task" in config:
        return str(config["task"])
    return message.metadata.message_type


def decide_read(node: NodeHome, mandate: Mandate) -> tuple[Decision, str | None]:
    """Cedar's ``read_dataset`` verdict for the mandate's job, from the node's own facts, and
    the id of the consent that covers it (if any)."""
    company = node.company_id
    own = dataset_id(company, mandate.dataset)
    consents = [
        ConsentFacts(
            id=c.consent_id,
            company=company,
            dataset=dataset_id(company, c.dataset),
            purpose=c.purpose,
            expires_at=c.expires_at,
            revoked=c.revoked_at is not None,
        )
        for c in node.consents()
        if c.dataset == mandate.dataset
    ]
    dataset = next(d for d in mandate.datasets if d.id == own)
    others = [d for d in mandate.datasets if d.id != own]
    decision = node_decision_point(node).decide(
        CompanyFacts(id=company, industry=dataset.industry),
        "read_dataset",
        dataset,
        DatasetReadContext(job=mandate.job_facts()),
        entities=[*others, *consents],
    )
    now = utcnow()
    live = [c for c in consents if c.purpose == mandate.spec.purpose and c.live_at(now)]
    return decision, (live[0].id if live else None)


def _refusal(message: Message, node: NodeHome | None, refusal: Refusal, task: str) -> Message:
    reason = f"{REFUSAL_PREFIX}{refusal.reason}"
    if node is not None:
        job = message.content.config_records.get(CONFIG, ConfigRecord()).get("job-id")
        notice = refuse(node, refusal.cause, refusal.reason, task, str(job) if job else None)
        reason = attach(reason, notice.text, notice.signature)
    return Message(Error(code=GATE_REFUSED, reason=reason), reply_to=message)


def models_asked(message: Message, task: str) -> int:
    """How many models a scoring task carries (a stacked batch counts each; the baseline is
    one model, trained at the node)."""
    if task == TASK_BASELINE:
        return 1
    arrays = message.content.array_records.get(ARRAYS)
    if arrays is None or not len(arrays):
        return 0
    if task == "evaluate-models":
        first = next(iter(arrays.values()))
        return int(first.shape[0]) if first.shape else 0
    return 1


def _used_rows(reply: Message) -> tuple[int, float | None, float | None]:
    records = reply.content.metric_records
    if METRICS in records:
        metrics = records[METRICS]
        return (
            int(number(metrics, "num-examples", 0)),
            number(metrics, "epsilon") if "epsilon" in metrics else None,
            number(metrics, "delta") if "delta" in metrics else None,
        )
    if STATS in records:
        return int(number(records[STATS], "rows", 0)), None, None
    return 0, None, None


def check_task(
    node: NodeHome, message: Message, task: str
) -> tuple[Mandate, TrainingPlan, str | None]:
    """The node's checks before any row is read; :class:`Refusal` on the first that fails."""
    config = message.content.config_records.get(CONFIG)
    if config is None or "plan" not in config:
        raise Refusal("no-plan", "the task carries no training plan")
    try:
        plan = TrainingPlan.model_validate_json(str(config["plan"]))
    except ValueError as exc:
        raise Refusal("no-plan", f"the task's plan is malformed: {str(exc)[:200]}") from None
    warrant = config.get(WARRANT)
    mandate = mandate_for(node, plan, str(warrant) if warrant else None, shipped_policy_set().tiers)
    dp, secure = mandate.spec.privacy.dp is not None, mandate.spec.privacy.secure_aggregation
    if task not in inventory.allowed_tasks(dp, secure):
        raise Refusal(
            "task",
            f"task {task!r} is not in this node's release inventory for job {mandate.job_id} "
            f"({'under' if dp else 'without'} DP, {'with' if secure else 'without'} SecAgg+)",
        )
    decision, consent = decide_read(node, mandate)
    if not decision.allowed:
        raise Refusal("policy", " ".join(decision.reasons) or "denied by policy")
    return mandate, plan, consent


def make_gate(resolve: Callable[[Context], NodeHome]) -> Mod:
    """The gate mod for a ClientApp whose node folder ``resolve`` finds."""

    def gate(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        task = task_name(message)
        if task == TASK_IDENTIFY:
            return call_next(message, context)
        node = resolve(context)
        try:
            mandate, plan, consent = check_task(node, message, task)
            with (
                scoring_slot(node, mandate, task, models_asked(message, task)),
                serving(mandate),
                metered(message.content) as meter,
            ):
                reply = call_next(message, context)
                spent = reported_spend()
        except Refusal as refusal:
            return _refusal(message, node, refusal, task)
        log = HashChainLog(node.local_log_path)
        if reply.has_error():
            log.append({"kind": "task-failed", "job": plan.job_id, "task": task})
            return reply
        dp = mandate.spec.privacy.dp is not None
        problems = inventory.check_outgoing(
            task, reply.content, dp, mandate.spec.privacy.secure_aggregation
        )
        if problems:
            return _refusal(message, node, Refusal("inventory", "; ".join(problems)), task)
        rows, epsilon, delta = _used_rows(reply)
        config = message.content.config_records[CONFIG]
        round_number = int(number(config, "round", 0))
        manifest = node.vault(plan.dataset).manifest
        line = log.append(
            {
                "kind": "data-use",
                "job": plan.job_id,
                "round": round_number,
                "task": task,
                "dataset": plan.dataset,
                "rows": rows,
                "epsilon": epsilon,
                "warrant": mandate.warrant_hash,
            }
        )
        payload = ReceiptPayload(
            company=node.company_id,
            dataset=dataset_id(node.company_id, plan.dataset),
            dataset_hash=manifest.content_hash or "",
            job=plan.job_id,
            round=round_number,
            task=task,
            purpose=mandate.spec.purpose,
            consent=consent,
            plan=plan.digest(),
            warrant=mandate.warrant_hash,
            rows=rows,
            epsilon=epsilon,
            delta=delta,
            epsilon_job=spent.get("job") if spent else None,
            epsilon_purpose=spent.get("purpose") if spent else None,
            epsilon_dataset=spent.get("dataset") if spent else None,
            time=line.time,
            log_index=line.index,
            log_hash=line.hash,
            ledger=witnessed_head(node),
            metering=meter.reading(reply.content),
        )
        text, signature = sign_receipt(node.key(), payload)
        reply.content[RECEIPT] = ConfigRecord({"payload": text, "signature": signature})
        if task == TASK_EVALUATE:
            answer = safe_witness_answer(node, config)
            if answer is not None:
                reply.content[WITNESS] = answer
        return reply

    return gate
