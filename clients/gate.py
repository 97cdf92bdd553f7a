"""The company's own gate: a Flower mod around every task that reads the company's data.

Before the task runs, the gate checks that the code this node runs is the code bundle filed
for the job (algorithm filing, ``sandbox.protocol.bundle``). Then it asks the policy engine
(the same Cedar policies as the sandbox, evaluated here at the node with the company's own
facts: its dataset's manifest and its own record of the consents it granted) whether this job
may read the dataset. A refusal is written to the company's hash-chained local log and travels
back as the reply's error; no data is read. After the task, the gate writes the use to the local
log and attaches a receipt signed with the company's key: the coordinator can record the
company's participation but cannot invent it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

from flwr.app import ConfigRecord, Context, Error, Message
from flwr.clientapp.typing import ClientAppCallable, Mod

from policies.engine import Decision, PolicyDecisionPoint
from policies.facts import CompanyFacts, ConsentFacts, DatasetFacts, DatasetReadContext, JobFacts
from policies.policyset import LoadedPolicySet
from sandbox.node.home import NodeHome
from sandbox.node.locallog import HashChainLog
from sandbox.protocol.bundle import running_bundle
from sandbox.protocol.messages import (
    CONFIG,
    METRICS,
    RECEIPT,
    STATS,
    TASK_IDENTIFY,
    TrainingPlan,
    number,
)
from sandbox.protocol.receipts import ReceiptPayload, sign_receipt
from sandbox.utc import utcnow

GATE_REFUSED = 403

_policy_set: LoadedPolicySet | None = None
_pdps: dict[str, PolicyDecisionPoint] = {}
_lock = threading.Lock()


def _shipped_policy_set() -> LoadedPolicySet:
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

            pdp = PolicyDecisionPoint(_shipped_policy_set(), record)
            _pdps[key] = pdp
        return pdp


def task_name(message: Message) -> str:
    config = message.content.config_records.get(CONFIG)
    if config is not None and "task" in config:
        return str(config["task"])
    return message.metadata.message_type


def decide_read(node: NodeHome, plan: TrainingPlan) -> tuple[Decision, str | None]:
    """Cedar's ``read_dataset`` verdict for this task, from the node's own facts, and the id
    of the consent that covers it (if any)."""
    company = node.company_id
    manifest = node.vault(plan.dataset).manifest
    dataset_id = f"{company}/{plan.dataset}"
    dataset = DatasetFacts(
        id=dataset_id,
        company=company,
        industry=manifest.industry,
        grade=manifest.grade,
        personal_data=manifest.personal_data,
    )
    consents = [
        ConsentFacts(
            id=c.consent_id,
            company=company,
            dataset=f"{company}/{c.dataset}",
            purpose=c.purpose,
            expires_at=c.expires_at,
            revoked=c.revoked_at is not None,
        )
        for c in node.consents()
        if c.dataset == plan.dataset
    ]
    job = JobFacts(
        id=plan.job_id,
        engineer=plan.engineer,
        purpose=plan.purpose,
        participants=(company,),
        datasets=(dataset_id,),
        secure_aggregation=plan.secure_aggregation,
        dp_epsilon=Decimal(str(plan.dp.epsilon)) if plan.dp is not None else None,
    )
    decision = node_decision_point(node).decide(
        CompanyFacts(id=company, industry=manifest.industry),
        "read_dataset",
        dataset,
        DatasetReadContext(job=job),
        entities=consents,
    )
    now = utcnow()
    live = [c for c in consents if c.purpose == plan.purpose and c.live_at(now)]
    return decision, (live[0].id if live else None)


def bundle_refusal(plan: TrainingPlan) -> str | None:
    """Why this node must not run the task under the job's algorithm filing, or None."""
    if plan.code_bundle is None:
        return f"job {plan.job_id} has no filed code bundle; this node runs filed code only"
    running = running_bundle().digest
    if running != plan.code_bundle:
        return (
            f"the code at this node (bundle {running[:16]}…) is not the code filed for job "
            f"{plan.job_id} (bundle {plan.code_bundle[:16]}…)"
        )
    return None


def _refusal(message: Message, reason: str) -> Message:
    return Message(
        Error(code=GATE_REFUSED, reason=f"refused by the company's gate: {reason}"),
        reply_to=message,
    )


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


def make_gate(resolve: Callable[[Context], NodeHome]) -> Mod:
    """The gate mod for a ClientApp whose node folder ``resolve`` finds."""

    def gate(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        task = task_name(message)
        if task == TASK_IDENTIFY:
            return call_next(message, context)
        node = resolve(context)
        config = message.content.config_records.get(CONFIG)
        if config is None or "plan" not in config:
            return _refusal(message, "the task carries no training plan")
        plan = TrainingPlan.model_validate_json(str(config["plan"]))
        unfiled = bundle_refusal(plan)
        if unfiled is not None:
            HashChainLog(node.local_log_path).append(
                {
                    "kind": "refused",
                    "cause": "code-bundle",
                    "job": plan.job_id,
                    "task": task,
                    "filed": plan.code_bundle,
                    "running": running_bundle().digest,
                }
            )
            return _refusal(message, unfiled)
        decision, consent = decide_read(node, plan)
        if not decision.allowed:
            return _refusal(message, " ".join(decision.reasons) or "denied by policy")
        reply = call_next(message, context)
        log = HashChainLog(node.local_log_path)
        if reply.has_error():
            log.append({"kind": "task-failed", "job": plan.job_id, "task": task})
            return reply
        rows, epsilon, delta = _used_rows(reply)
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
                "decision": decision.decision_id,
            }
        )
        payload = ReceiptPayload(
            company=node.company_id,
            dataset=f"{node.company_id}/{plan.dataset}",
            dataset_hash=manifest.content_hash or "",
            job=plan.job_id,
            round=round_number,
            task=task,
            purpose=plan.purpose,
            consent=consent,
            plan=plan.digest(),
            rows=rows,
            epsilon=epsilon,
            delta=delta,
            time=line.time,
            log_index=line.index,
            log_hash=line.hash,
        )
        text, signature = sign_receipt(node.key(), payload)
        reply.content[RECEIPT] = ConfigRecord({"payload": text, "signature": signature})
        return reply

    return gate
