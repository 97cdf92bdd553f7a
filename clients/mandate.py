"""What a company's node may do for a job, worked out by the node itself from the job's warrant.

Before any row is read, the node checks the warrant that came with the task against the keys
it pinned when it joined (the operator's signature; the approving regulator's where the tier
asks for an approval), that the company and its dataset are in it, that the spec matches its
hash, that the code this node runs is the filed bundle (hashed here, over the node's own
installed code) and that the plan it was sent is exactly the plan the filed spec makes. Every
privacy parameter and every task it will do comes from the warrant's spec, never from the
plan: a plan that differs in anything is refused. The node also works out the job's risk tier
itself, from the datasets the warrant lists with its own manifest for its own dataset, and
refuses a warrant that files the job under a lower tier.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from policies.facts import DatasetFacts, JobFacts
from policies.tiers import TierConfig
from sandbox.node.home import NodeHome
from sandbox.node.pins import load_pins
from sandbox.protocol.bundle import running_bundle
from sandbox.protocol.jobspec import JobSpec
from sandbox.protocol.messages import TrainingPlan, plan_from_spec, scoring_allowance
from sandbox.protocol.warrant import Warrant, WarrantError
from sandbox.vocabulary import dataset_id


class Refusal(Exception):
    """The node will not do this task; ``cause`` names the check that failed (a short word
    for the logs and the ledger), the message says why in full."""

    def __init__(self, cause: str, reason: str) -> None:
        super().__init__(reason)
        self.cause = cause
        self.reason = reason


@dataclass(frozen=True)
class Mandate:
    """A verified warrant, as this node reads it."""

    warrant: Warrant
    warrant_hash: str
    spec: JobSpec
    company: str
    dataset: str
    tier: str
    datasets: tuple[DatasetFacts, ...]
    caps: dict[str, float] | None = None
    """Purpose and dataset budget caps; None: the tier's, from the node's policy set."""

    @property
    def job_id(self) -> str:
        return self.warrant.job_id

    def allowance(self, task: str) -> int | None:
        """How many models the node scores for this job at most in ``task`` (None: the task
        scores no model)."""
        return scoring_allowance(self.spec).get(task)

    def job_facts(self) -> JobFacts:
        """The job as the warrant files it, for the node's own policy decision."""
        dp = self.spec.privacy.dp
        return JobFacts(
            id=self.job_id,
            engineer=self.warrant.engineer,
            purpose=self.spec.purpose,
            participants=tuple(d.company for d in self.datasets),
            datasets=tuple(d.id for d in self.datasets),
            secure_aggregation=self.spec.privacy.secure_aggregation,
            dp_epsilon=Decimal(str(dp.epsilon)) if dp is not None else None,
            approved=self.warrant.approval is not None,
        )


def mandate_for(
    node: NodeHome, plan: TrainingPlan, warrant_text: str | None, tiers: TierConfig
) -> Mandate:
    """The node's mandate for ``plan``, or :class:`Refusal` naming the first check that
    failed. Reads the node's own files (keys, manifest), never the vault's rows."""
    if not warrant_text:
        raise Refusal("no-warrant", f"the task for job {plan.job_id} carries no warrant")
    try:
        pins = load_pins(node.folder)
        assert pins is not None
        warrant = _verified(warrant_text, pins.operator, pins.regulator)
    except WarrantError as exc:
        raise Refusal("warrant", str(exc)) from None
    if warrant.job_id != plan.job_id:
        raise Refusal(
            "warrant-job",
            f"the task is for job {plan.job_id} but its warrant is job {warrant.job_id}'s",
        )
    company = node.company_id
    mine = warrant.dataset_of(company)
    if mine is None or mine.dataset != dataset_id(company, plan.dataset):
        raise Refusal(
            "not-in-warrant",
            f"the warrant of job {warrant.job_id} does not name dataset "
            f"{dataset_id(company, plan.dataset)} of {company}",
        )
    try:
        spec = warrant.job_spec()
    except WarrantError as exc:
        raise Refusal("warrant-spec", str(exc)) from None
    running = running_bundle().digest
    if running != warrant.code_bundle:
        raise Refusal(
            "code-bundle",
            f"the code at this node (bundle {running[:16]}…) is not the code filed for job "
            f"{warrant.job_id} (bundle {warrant.code_bundle[:16]}…)",
        )
    digest = warrant.digest()
    expected = plan_from_spec(
        spec, warrant.job_id, warrant.engineer, warrant.code_bundle, digest, plan.encoding
    )
    differing = _differences(expected.terms(), plan.terms())
    if differing:
        raise Refusal(
            "plan-differs",
            f"the plan for job {warrant.job_id} differs from its filed spec in "
            f"{', '.join(differing)}; this node does what the warrant files, nothing else",
        )
    datasets = _datasets(node, warrant, plan.dataset)
    tier = tiers.risk_tier({d.industry for d in datasets}, {d.grade for d in datasets})
    rank = {name: i for i, name in enumerate(tiers.tier_order)}
    if rank.get(warrant.tier, -1) < rank[tier]:
        raise Refusal(
            "tier",
            f"the warrant files job {warrant.job_id} as {warrant.tier}-risk; by this node's "
            f"policy set and its own data it is {tier}-risk",
        )
    return Mandate(warrant, digest, spec, company, plan.dataset, tier, datasets)


@lru_cache(maxsize=64)
def _verified(text: str, operator: str, regulator: str) -> Warrant:
    warrant = Warrant.parse(text)
    warrant.check_signatures(operator, regulator)
    return warrant


def _differences(expected: dict[str, object], got: dict[str, object], at: str = "") -> list[str]:
    out = []
    for key in sorted(set(expected) | set(got)):
        a, b = expected.get(key), got.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{at}{key}.")
        elif a != b:
            out.append(f"{at}{key}")
    return out


def _datasets(node: NodeHome, warrant: Warrant, name: str) -> tuple[DatasetFacts, ...]:
    """The warrant's datasets as policy facts, the node's own from its own manifest."""
    manifest = node.vault(name).manifest
    own = dataset_id(node.company_id, name)
    out = []
    for entry in warrant.datasets:
        if entry.dataset == own:
            out.append(
                DatasetFacts(
                    id=own,
                    company=node.company_id,
                    industry=manifest.industry,
                    grade=manifest.grade,
                    personal_data=manifest.personal_data,
                )
            )
        else:
            out.append(
                DatasetFacts(
                    id=entry.dataset,
                    company=entry.company,
                    industry=entry.industry,
                    grade=entry.grade,
                    personal_data=entry.personal_data,
                )
            )
    return tuple(out)
