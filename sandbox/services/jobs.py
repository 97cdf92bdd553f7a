"""Jobs: filing (admission decided by policy), a regulator's approval or rejection, and the
governed reads of jobs.

Whether a job needs a regulator's approval is Cedar's to say, not this module's: an admitted
job awaits approval when the policy set would refuse to start it unapproved and would start
it approved (``tier.high.regulator_approval``, ``grades.important_needs_approval``). The
policies that ask for the approval are recorded with the filing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from policies.engine import Decision
from policies.facts import EngineerFacts, JobListScope, RegistryFacts, RegulatorFacts
from sandbox import identity
from sandbox.errors import Conflict, Invalid, check_id
from sandbox.governance import Annotation, Governance, JobWorld, job_world
from sandbox.identity.installation import installation_regulator_key
from sandbox.ledger import LedgerRecord, Purpose, Resource
from sandbox.protocol.bundle import running_bundle
from sandbox.protocol.jobspec import JobSpec
from sandbox.protocol.warrant import Warrant
from sandbox.registry import companies as company_store
from sandbox.registry import jobs as store
from sandbox.registry.models import Dataset, Job, PolicyDecision, Release, Round
from sandbox.services import budgets, warrants
from sandbox.services.base import actor_of, authorize, company_in_question, denied, view
from sandbox.services.views import FigureScope, figure_scope
from sandbox.utc import rfc3339, utcnow
from sandbox.vocabulary import (
    INSTALLATION_REGULATOR,
    MAX_PARTICIPANTS,
    JobStatus,
    dataset_id,
    new_id,
)

APPROVAL_SKEW = timedelta(minutes=10)


@dataclass(frozen=True)
class FiledJob:
    job: Job
    decision_id: str
    allowed: bool
    reasons: tuple[str, ...]
    approval_by: tuple[str, ...] = ()


def world_of(gov: Governance, job: Job, **more: Any) -> JobWorld:
    """The job's facts as the registry holds them now."""
    return job_world(
        gov.engine, job.id, store.job_spec(job), job.filed_by, job.approved_at is not None, **more
    )


def approval_policies(gov: Governance, filer: Any, world: JobWorld) -> tuple[str, ...]:
    """The policies that would keep the job from starting until a regulator approves it
    (none: it may start once admitted). A question the filing asks, not an access decision:
    its answer is recorded with the filing."""
    unapproved = gov.pdp.consider(filer, "start_job", world.job, entities=world.entities)
    if unapproved.allowed:
        return ()
    approved = gov.pdp.consider(
        filer, "start_job", replace(world.job, approved=True), entities=world.entities
    )
    if approved.allowed:
        return unapproved.policies
    return tuple(p for p in unapproved.policies if p not in approved.policies)


def _check_features(spec: JobSpec, world: JobWorld) -> None:
    """The features a spec names must be feature columns of every participant's dataset."""
    if spec.features is None:
        return
    for company_dataset, dataset in sorted(world.datasets.items()):
        columns = {c["name"] for c in dataset.manifest.get("features", [])}
        unknown = sorted(set(spec.features) - columns)
        if unknown:
            raise Invalid(
                f"features {', '.join(unknown)} are not feature columns of {company_dataset}'s "
                f"manifest (its features: {', '.join(sorted(columns))})"
            )


def file_job(
    gov: Governance,
    spec: JobSpec,
    filer: Any,
    job_id: str | None = None,
    bundle_hash: str | None = None,
) -> FiledJob:
    """File a job: admission is decided by policy, and the policy says whether it must await
    a regulator's approval. ``filer`` is the filer's policy facts (of whatever role: the
    policy decides). The spec's hash and the hash of the code bundle that may run it (by
    default, the code of this process) are filed with it. A filing is stored with its
    decision, admitted or not."""
    job_id = job_id or new_id("job")
    check_id(spec.purpose, "purpose")
    if len(spec.companies) > MAX_PARTICIPANTS:
        raise Invalid(f"a job names at most {MAX_PARTICIPANTS} companies")
    world = job_world(gov.engine, job_id, spec, filer.id, approved=False)
    missing = sorted(set(spec.companies) - set(world.companies))
    if missing:
        raise Invalid(f"these companies are not in the registry: {', '.join(missing)}")
    without = sorted(c for c in spec.companies if dataset_id(c, spec.dataset) not in world.datasets)
    if without:
        raise Invalid(
            f"these companies have no dataset {spec.dataset!r}: {', '.join(without)} (set the "
            "spec's `dataset` to the name their manifests give it)"
        )
    _check_features(spec, world)
    tier = gov.job_tier(list(world.datasets.values()))
    decision = gov.decide(
        filer,
        "submit_job",
        world.job,
        entities=world.entities,
        annotation=Annotation(
            job_id=job_id,
            purpose=spec.purpose,
            consent_id="per-participant",
            participants=spec.companies,
        ),
    )
    approval_by = approval_policies(gov, filer, world) if decision.allowed else ()
    rules = (
        warrants.decided_rules(gov, filer, world, tier, approval_by) if decision.allowed else None
    )
    if not decision.allowed and not decision.policies:
        # Nothing permits this filer to file at all (its role): a denied decision, recorded,
        # and no job stored.
        raise denied(decision)
    if decision.allowed:
        budgets.check_budgets(gov, filer, world, spec, job_id, "filing")
    if not decision.allowed:
        status = JobStatus.DENIED
    elif approval_by:
        status = JobStatus.AWAITING_APPROVAL
    else:
        status = JobStatus.ADMITTED
    details: dict[str, Any] = {"spec_sha256": spec.spec_hash, "tier": tier, "status": status}
    if approval_by:
        details["approval_by"] = list(approval_by)
    # The record is made (and validated) before anything is stored.
    record = LedgerRecord(
        action="job.filed",
        actor=actor_of(filer),
        resource=Resource(kind="job", id=job_id),
        purpose=Purpose(name=spec.purpose, legal_basis="consent", consent_id="per-participant"),
        job_id=job_id,
        participants=list(spec.companies),
        details=details,
    )
    job = Job(
        id=job_id,
        purpose=spec.purpose,
        spec=spec.model_dump(mode="json"),
        spec_hash=spec.spec_hash,
        bundle_hash=bundle_hash if bundle_hash is not None else running_bundle().digest,
        filed_by=filer.id,
        status=status,
        status_reason=" ".join(decision.reasons) if not decision.allowed else None,
        risk_tier=tier,
        admission_decision=decision.decision_id,
        rules=rules.model_dump(mode="json") if rules is not None else None,
    )
    if status == JobStatus.ADMITTED:
        job.warrant = warrants.issue(gov, job, world)
        details["warrant_sha256"] = Warrant.parse(job.warrant).digest()
        record = record.model_copy(update={"details": details})
    job = store.insert_job(gov.engine, job)
    gov.record(record)
    return FiledJob(job, decision.decision_id, decision.allowed, decision.reasons, approval_by)


def _awaiting(gov: Governance, job_id: str) -> Job:
    job = store.get_job(gov.engine, job_id)
    if job.status != JobStatus.AWAITING_APPROVAL:
        raise Conflict(f"job {job_id} is {job.status}, not awaiting approval")
    return job


def _decide_on_approval(gov: Governance, regulator: Any, job: Job, action: str) -> Decision:
    world = world_of(gov, job)
    spec = store.job_spec(job)
    return authorize(
        gov,
        regulator,
        action,
        world.job,
        entities=world.entities,
        annotation=Annotation(job_id=job.id, purpose=spec.purpose, consent_id="per-participant")
        if action == "approve_job"
        else Annotation(job_id=job.id),
    )


def _moved(gov: Governance, job_id: str, moved: Job | None, to: JobStatus) -> Job:
    if moved is None:
        now = store.get_job(gov.engine, job_id).status
        raise Conflict(f"job {job_id} is {now} now; it cannot become {to}")
    return moved


def approval_statement(
    gov: Governance, job_id: str, regulator_id: str, time: str, note: str
) -> bytes:
    """The bytes ``regulator_id`` signs to approve ``job_id`` with ``note`` at ``time``."""
    return warrants.approval_to_sign(store.get_job(gov.engine, job_id), regulator_id, time, note)


def approve_job(
    gov: Governance, regulator: Any, job_id: str, note: str, signed_at: str, signature: str
) -> Job:
    """A regulator approves a job that awaits approval, with its own signature over the
    job's filed spec and code (:func:`approval_statement`); the job's warrant is issued with
    that signature in it."""
    note = note[:2000]
    job = _awaiting(gov, job_id)
    decision = _decide_on_approval(gov, regulator, job, "approve_job")
    check_recent(signed_at)
    approval = warrants.signed_approval(gov, job, regulator.id, signed_at, note, signature)
    world = world_of(gov, job)
    budgets.check_budgets(gov, regulator, world, store.job_spec(job), job_id, "approval")
    warrant = warrants.issue(gov, job, world, approval)
    approved = store.move_job(
        gov.engine,
        job_id,
        JobStatus.APPROVED,
        approved_by=regulator.id,
        approved_at=utcnow(),
        approval_note=note or None,
        warrant=warrant,
    )
    approved = _moved(gov, job_id, approved, JobStatus.APPROVED)
    gov.record(
        LedgerRecord(
            action="job.approved",
            actor=actor_of(regulator),
            resource=Resource(kind="job", id=job_id),
            job_id=job_id,
            details={
                "decision": decision.decision_id,
                "warrant_sha256": Warrant.parse(warrant).digest(),
                "approval_signature_sha256": hashlib.sha256(signature.encode()).hexdigest(),
            },
        )
    )
    return approved


def check_recent(signed_at: str) -> None:
    try:
        moment = datetime.fromisoformat(signed_at.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(f"the approval's time {signed_at[:40]!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None or abs(utcnow() - moment) > APPROVAL_SKEW:
        raise Invalid(
            "the approval was signed too long ago or in the future; sign it again now "
            f"(at most {int(APPROVAL_SKEW.total_seconds() // 60)} minutes apart)"
        )


def reject_job(gov: Governance, regulator: Any, job_id: str, reason: str) -> Job:
    """A regulator rejects a job that awaits approval, with a reason."""
    if not reason.strip():
        raise Invalid("a rejection needs a reason")
    job = _awaiting(gov, job_id)
    decision = _decide_on_approval(gov, regulator, job, "reject_job")
    rejected = store.move_job(
        gov.engine,
        job_id,
        JobStatus.REJECTED,
        reason=reason.strip(),
        approval_note=reason.strip()[:2000],
    )
    rejected = _moved(gov, job_id, rejected, JobStatus.REJECTED)
    gov.record(
        LedgerRecord(
            action="job.rejected",
            actor=actor_of(regulator),
            resource=Resource(kind="job", id=job_id),
            job_id=job_id,
            details={"decision": decision.decision_id},
        )
    )
    return rejected


# ---------------------------------------------------------------------------------- reads
def authorize_job(
    gov: Governance, actor: Any, job_id: str, action: str, annotation: Annotation
) -> Job:
    """Decide ``action`` on a job, with its facts as the registry holds them now."""
    job = store.get_job(gov.engine, job_id)
    world = world_of(gov, job)
    authorize(gov, actor, action, world.job, entities=world.entities, annotation=annotation)
    return job


def read_job(gov: Governance, actor: Any, job_id: str, view_name: str) -> Job:
    """Decide a read of a job (status, rounds, metrics, result, progress); the job as the
    reader may see it (:mod:`sandbox.services.views`)."""
    job, scope = read_job_scoped(gov, actor, job_id, view_name)
    return scope.job(job)


def read_job_scoped(
    gov: Governance, actor: Any, job_id: str, view_name: str
) -> tuple[Job, FigureScope]:
    """Decide a read of a job; the job as stored and whose figures the reader may not see."""
    job = store.get_job(gov.engine, job_id)
    world = world_of(gov, job)
    authorize(gov, actor, "read_job", world.job, entities=world.entities,
              annotation=view(view_name, job_id=job_id))  # fmt: skip
    return job, figure_scope(gov, actor, world)


def recheck_job_read(gov: Governance, actor: Any, job_id: str) -> FigureScope:
    """For a stream whose read of the job was decided (and recorded) when it opened: the same
    question asked again of the policy now, not recorded, and whose figures the reader may
    not see now. Raises Forbidden when the answer has become a denial."""
    job = store.get_job(gov.engine, job_id)
    world = world_of(gov, job)
    decision = gov.pdp.consider(actor, "read_job", world.job, None, world.entities)
    if not decision.allowed:
        raise denied(decision)
    return figure_scope(gov, actor, world)


def poll_progress(
    gov: Governance, job_id: str, after_round: int, scope: FigureScope
) -> tuple[Job, list[Round]]:
    """A job's status and the rounds after ``after_round`` as a reader of ``scope`` sees
    them, for a progress stream (:func:`recheck_job_read` keeps its read decided)."""
    job = store.get_job(gov.engine, job_id)
    rounds = [r for r in store.rounds_of(gov.engine, job_id) if r.number > after_round]
    return scope.job(job), [scope.round(r) for r in rounds]


def job_rounds(gov: Governance, actor: Any, job_id: str) -> tuple[Job, list[Round]]:
    """A job's rounds: who was asked, who took part, who was missing and why, metrics (each
    company's figures only to those who may see them)."""
    job, scope = read_job_scoped(gov, actor, job_id, "rounds")
    return scope.job(job), [scope.round(r) for r in store.rounds_of(gov.engine, job_id)]


def job_result(gov: Governance, actor: Any, job_id: str) -> Job:
    """A completed job's result (the model's hash, each company's metrics as the reader may
    see them)."""
    job = read_job(gov, actor, job_id, "result")
    if job.result is None:
        raise Conflict(f"job {job_id} has no result: it is {job.status}")
    return job


def filed_before(gov: Governance, engineer: Any, spec: JobSpec) -> Job | None:
    """The newest job ``engineer`` filed with this very spec that completed, is running, or
    can still run (None: none): what a repeated start (``federation run --once``) reuses."""
    filed = list_jobs(gov, engineer, engineer=engineer.id, limit=500)
    same = [j for j in filed if j.spec_hash == spec.spec_hash]
    usable = [j for j in same if j.status in ("completed", "running", "admitted", "approved")]
    return usable[0] if usable else None


def list_jobs(
    gov: Governance,
    actor: Any,
    engineer: str | None = None,
    company: str | None = None,
    status: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> list[Job]:
    """Jobs, newest first. ``engineer`` and ``company`` are the scope the policy judges: an
    engineer lists the jobs they filed, a company those it takes part in."""
    _authorize_job_list(gov, actor, engineer, company, "jobs")
    return store.query_jobs(gov.engine, engineer, company, status, offset, limit)


def job_counts(gov: Governance, actor: Any) -> dict[str, int]:
    """How many jobs are in each status: a listing of all jobs, decided as one."""
    _authorize_job_list(gov, actor, None, None, "job_counts")
    return store.count_by_status(gov.engine)


def _authorize_job_list(
    gov: Governance, actor: Any, engineer: str | None, company: str | None, view_name: str
) -> None:
    scope = JobListScope(
        engineer=EngineerFacts(engineer) if engineer is not None else None,
        company=company_in_question(gov, company, actor)[1] if company else None,
    )
    authorize(
        gov, actor, "list_jobs", RegistryFacts(), scope, annotation=view(view_name, owner=company)
    )


@dataclass(frozen=True)
class JobOverview:
    """A job with what a person reads about it: its admission decision's readable side, its
    rounds and its release decisions."""

    job: Job
    admission: PolicyDecision | None
    rounds: list[Round]
    releases: list[Release]


def job_overview(gov: Governance, actor: Any, job_id: str) -> JobOverview:
    """A job, its admission, rounds and release decisions: one read of the job."""
    job, scope = read_job_scoped(gov, actor, job_id, "overview")
    return JobOverview(
        job=scope.job(job),
        admission=decision_note(gov, job.admission_decision),
        rounds=[scope.round(r) for r in store.rounds_of(gov.engine, job_id)],
        releases=[scope.release(r) for r in store.releases_of(gov.engine, job_id)],
    )


def decision_note(gov: Governance, decision_id: str | None) -> PolicyDecision | None:
    """The readable side of a recorded decision (its reasons), if any; for a reader who was
    allowed to read what the decision was about."""
    return store.find_decision(gov.engine, decision_id) if decision_id else None


def job_datasets(gov: Governance, actor: Any, job_id: str) -> list[Dataset]:
    """The manifests of the datasets a job was admitted over (a read of the job)."""
    job = read_job(gov, actor, job_id, "datasets")
    spec = store.job_spec(job)
    return [company_store.get_dataset(gov.engine, c, spec.dataset) for c in spec.companies]


def store_job(gov: Governance, job_id: str) -> Job:
    """A job as stored, undecided: for the sandbox's own tooling to learn who filed it
    (and so who starts it) before the governed act."""
    return store.get_job(gov.engine, job_id)


def approve_with_key(gov: Governance, regulator: Any, job_id: str, note: str, key: Any) -> Job:
    """Approve as a regulator whose private key is at hand (the CLI's ``--key-file``; the
    installation's regulator key in the sandbox's home): sign the statement now, then
    :func:`approve_job`."""
    signed_at = rfc3339(utcnow())
    statement = approval_statement(gov, job_id, regulator.id, signed_at, note[:2000])
    return approve_job(gov, regulator, job_id, note, signed_at, identity.sign(key, statement))


def approve_as_installation_regulator(gov: Governance, job_id: str, note: str) -> Job:
    """Approve as the installation's own regulator, whose key is in the sandbox's home (the
    demo plays it; so do the benchmarks)."""
    key = installation_regulator_key(gov.settings, "approving a job as the installation regulator")
    return approve_with_key(gov, RegulatorFacts(INSTALLATION_REGULATOR), job_id, note, key)
