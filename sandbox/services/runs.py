"""Runs: starting a job (from any face, on either engine, one call), and what a run records
as it goes (its status, rounds, receipts, release) through the registry.

:func:`start_job` decides ``start_job`` (who, and whether the job is approved where its tier
asks), marks the job running atomically (two starts cannot both win), hands the job to the
engine's launcher and records the start. A launcher only begins the run and returns: a worker
process (the API), ``flwr run`` on a SuperLink (the federation), or nothing at all when the
caller runs the simulation in its own process next (the CLI, the demo).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.data.manifest import DatasetManifest
from sandbox.errors import Conflict
from sandbox.governance import Annotation, Governance
from sandbox.ledger import LedgerRecord, Resource
from sandbox.protocol.jobspec import JobSpec
from sandbox.registry import companies as company_store
from sandbox.registry import jobs as store
from sandbox.registry import privacy as privacy_store
from sandbox.registry.models import Dataset, Job, Receipt, Release, Round
from sandbox.services import budgets
from sandbox.services.base import actor_of
from sandbox.services.jobs import authorize_job, world_of
from sandbox.utc import utcnow
from sandbox.vocabulary import NOT_RUNNABLE_BECAUSE, RUNNABLE, JobStatus

Launch = Callable[[str], object]


def check_runnable(job: Job) -> None:
    if JobStatus(job.status) not in RUNNABLE:
        hint = NOT_RUNNABLE_BECAUSE.get(JobStatus(job.status), f"it is {job.status}")
        raise Conflict(f"job {job.id} cannot run: {hint}")


def start_job(
    gov: Governance, actor: Any, job_id: str, launch: Launch, *, resume: bool = False
) -> Job:
    """Start a job's run: decided by policy, marked running, launched, recorded. A job
    already running is refused unless ``resume`` (its run died; the coordinator resumes
    after its last completed round). If ``launch`` fails, no run began: the job goes back to
    where it was and the failure is raised."""
    job = authorize_job(gov, actor, job_id, "start_job", Annotation(job_id=job_id))
    if job.status == JobStatus.RUNNING and not resume:
        raise Conflict(
            f"job {job_id} is running already; if its run died, resume it on the sandbox's "
            f"machine with `sandbox job run {job_id}`"
        )
    check_runnable(job)
    budgets.check_budgets(gov, actor, world_of(gov, job), spec(job), job_id, "start")
    started = store.move_job(
        gov.engine,
        job_id,
        JobStatus.RUNNING,
        only_from=[JobStatus(job.status)],
        **store.begin_run_values(),
    )
    if started is None:
        raise Conflict(f"job {job_id} was started by someone else just now")
    try:
        launch(job_id)
    except BaseException:
        store.move_job(
            gov.engine,
            job_id,
            JobStatus(job.status),
            only_from=[JobStatus.RUNNING],
            started_at=job.started_at,
        )
        raise
    gov.record(
        LedgerRecord(
            action="job.started",
            actor=actor_of(actor),
            resource=Resource(kind="job", id=job_id),
            job_id=job_id,
            details={"rounds_completed": job.rounds_completed},
        )
    )
    return store.get_job(gov.engine, job_id)


# ------------------------------------------------------------- what a run records (engine)
def job(engine: Any, job_id: str) -> Job:
    return store.get_job(engine, job_id)


def spec(job: Job) -> JobSpec:
    return store.job_spec(job)


def datasets(engine: Any, job: Job) -> list[Dataset]:
    named = spec(job)
    return [company_store.get_dataset(engine, c, named.dataset) for c in named.companies]


def manifests(engine: Any, job: Job) -> list[DatasetManifest]:
    return [DatasetManifest.model_validate(d.manifest) for d in datasets(engine, job)]


def company_key(engine: Any, company_id: str) -> str:
    """A company's registered public key (its receipts and identity proofs verify with it)."""
    return company_store.get_company(engine, company_id).public_key


def begin(engine: Any, job_id: str) -> Job:
    """The coordinator takes up a started job (again, when it resumes one)."""
    moved = store.move_job(engine, job_id, JobStatus.RUNNING, **store.begin_run_values())
    if moved is None:
        check_runnable(store.get_job(engine, job_id))
        raise Conflict(f"job {job_id} could not be taken up")
    return moved


def _end(engine: Any, job_id: str, to: JobStatus, reason: str | None, **fields: Any) -> Job | None:
    return store.move_job(
        engine,
        job_id,
        to,
        only_from=[JobStatus.RUNNING],
        reason=reason,
        ended_at=utcnow(),
        **fields,
    )


def stop(engine: Any, job_id: str, reason: str) -> Job | None:
    """The run ended as designed before its last round (too few participants, a shutdown);
    it may be started again."""
    return _end(engine, job_id, JobStatus.STOPPED, reason)


def fail(engine: Any, job_id: str, reason: str) -> Job | None:
    """The run broke; it may be started again."""
    return _end(engine, job_id, JobStatus.FAILED, reason)


def complete(engine: Any, job_id: str, model_hash: str, result: dict[str, Any]) -> Job | None:
    return _end(engine, job_id, JobStatus.COMPLETED, None, model_hash=model_hash, result=result)


def store_round(engine: Any, record: Round, completed: bool) -> Round:
    return store.add_round(engine, record, completed)


def rounds(engine: Any, job_id: str) -> list[Round]:
    return store.rounds_of(engine, job_id)


def store_receipts(engine: Any, receipts: list[Receipt]) -> None:
    store.add_receipts(engine, receipts)


def receipts(engine: Any, job_id: str) -> list[Receipt]:
    return store.receipts_of_job(engine, job_id)


def store_release(engine: Any, release: Release) -> Release:
    return store.add_release(engine, release)


def releases(engine: Any, job_id: str) -> list[Release]:
    return store.releases_of(engine, job_id)


# ------------------------------------------------- a DP run's privacy charges (write-ahead)
# The coordinator charges each company's run before its task is sent and settles it with
# what the company reports; the registry keeps the charges (sandbox.registry.privacy).
RunScope = privacy_store.RunScope
budget_facts = privacy_store.budget_facts
charge_run = privacy_store.charge_run
settle_run = privacy_store.settle_run
annotate_run = privacy_store.annotate_run
release_run = privacy_store.release_run
job_spends = privacy_store.job_spends
