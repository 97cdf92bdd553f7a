"""The benchmarks' bare arm: the same learning, DP and SecAgg+ with no policy decisions, no
warrant, no gate checks, no receipts and no ledger. It exists to measure what governance costs
and to drill the learning mechanisms alone; nothing of the product (its CLI, API, console,
federation) imports it (an import contract says so).

A bare job has no warrant, so its nodes serve it under an unsigned mandate made here from the
filed spec: the handlers still take every privacy parameter from a mandate, and still account
every DP run in the company's own accountant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod

from clients.app import build_client_app, resolve_node
from clients.gate import serving, task_name
from clients.mandate import Mandate
from coordinator.app import build_server_app
from policies.facts import DatasetFacts
from sandbox.config import Settings
from sandbox.governance import get_governance
from sandbox.node.home import NodeHome
from sandbox.protocol.jobspec import JobSpec
from sandbox.protocol.messages import CONFIG, TASK_IDENTIFY, TrainingPlan
from sandbox.protocol.warrant import Warrant, WarrantDataset, WarrantRules
from sandbox.runtime.simulation import node_dirs_of, outcome_of, run_engine
from sandbox.services import runs
from sandbox.vocabulary import Tier, dataset_id

BareAppFactory = Callable[[Sequence[str]], ClientApp]


def bare_mandate(settings: Settings, plan: TrainingPlan, company: str) -> Mandate:
    """An unsigned mandate for a bare job, from its filed spec in the registry."""
    job = runs.job(get_governance(settings).engine, plan.job_id)
    unbounded = {"purpose": float("inf"), "dataset": float("inf")}
    return unsigned_mandate(
        job.id, job.filed_by, runs.spec(job), company, plan.dataset, job.bundle_hash, unbounded
    )


def unsigned_mandate(
    job_id: str,
    engineer: str,
    spec: JobSpec,
    company: str,
    dataset: str,
    code_bundle: str | None = None,
    caps: dict[str, float] | None = None,
    tier: Tier = "low",
) -> Mandate:
    """A mandate no one signed: the bare arm's, and the tests' that drive a node's handlers
    directly. ``caps`` None: the tier's budget caps."""
    own = dataset_id(company, dataset)
    facts = DatasetFacts(
        id=own, company=company, industry="unclassified", grade="general", personal_data=False
    )
    warrant = Warrant(
        job_id=job_id,
        engineer=engineer,
        spec=spec.model_dump(mode="json"),
        spec_hash=spec.spec_hash,
        code_bundle=code_bundle or "0" * 64,
        tier=tier,
        rules=WarrantRules(
            requires_dp=False,
            requires_secure_aggregation=False,
            dp_epsilon_cap=100.0,
            min_participants=1,
        ),
        policy_set="0" * 64,
        admission_index=0,
        datasets=(
            WarrantDataset(
                company=company,
                dataset=own,
                industry="unclassified",
                grade="general",
                personal_data=False,
            ),
        ),
        issued_at="unsigned",
    )
    return Mandate(warrant, warrant.digest(), spec, company, dataset, tier, (facts,), caps)


def bare_mod(settings: Settings, nodes: list[str] | None) -> Mod:
    def mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if task_name(message) == TASK_IDENTIFY:
            return call_next(message, context)
        node = resolve_node(context, nodes)
        config = message.content.config_records[CONFIG]
        plan = TrainingPlan.model_validate_json(str(config["plan"]))
        with serving(bare_mandate(settings, plan, node.company_id)):
            return call_next(message, context)

    return mod


def bare_client_app(settings: Settings) -> BareAppFactory:
    """The companies' app of the bare arm (the handlers under an unsigned mandate)."""

    def factory(node_dirs: Sequence[str]) -> ClientApp:
        nodes = [str(Path(d)) for d in node_dirs]
        return build_client_app(nodes, bare_mod(settings, nodes))

    return factory


def run_bare(
    settings: Settings,
    job_ids: Sequence[str],
    progress: Any = None,
    observer: Any = None,
    client_cpus: float = 1.0,
    company_app: BareAppFactory | None = None,
) -> dict[str, dict[str, Any]]:
    """Run bare-filed jobs on the simulation engine without governance; each job's outcome."""
    dirs = node_dirs_of(settings, job_ids)
    server = build_server_app(list(job_ids), progress, observer, governed=False)
    app = (company_app or bare_client_app(settings))(dirs)
    run_engine(settings, server, app, len(dirs), client_cpus)
    return {job_id: outcome_of(settings, job_id) for job_id in job_ids}


def spec_of_plan(plan: TrainingPlan, company: str) -> JobSpec:
    """The filed spec a plan would have come from (for tests that build plans directly)."""
    return JobSpec.model_validate(
        {
            "purpose": plan.purpose,
            "companies": [company],
            "dataset": plan.dataset,
            "model": plan.model.model_dump(),
            "rounds": plan.rounds,
            "local_epochs": plan.train.epochs,
            "learning_rate": plan.train.learning_rate,
            "batch_size": plan.train.batch_size,
            "optimizer": plan.train.optimizer,
            "weight_decay": plan.train.weight_decay,
            "seed": plan.train.seed,
            "min_participants": 1,
            "privacy": {
                "dp": plan.dp.model_dump() if plan.dp is not None else None,
                "secure_aggregation": plan.secure_aggregation,
            },
        }
    )


@contextmanager
def serving_plan(
    node: NodeHome, plan: TrainingPlan, caps: dict[str, float] | None = None
) -> Iterator[Mandate]:
    """Drive a node's handlers for ``plan`` as if its gate had let the task through, under an
    unsigned mandate whose spec is the plan's own terms (the benchmarks and tests that call
    the handlers directly)."""
    company = node.company_id if node.info_path.exists() else node.folder.name
    spec = spec_of_plan(plan, company)
    mandate = unsigned_mandate(plan.job_id, plan.engineer, spec, company, plan.dataset, caps=caps)
    with serving(mandate):
        yield mandate
