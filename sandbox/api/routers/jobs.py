"""Engineers: file a job, see its admission decision, start it, follow its progress as a
stream of server-sent events, read its rounds, metrics and result. (Regulators, the operator
and the participating companies read jobs too, as the policy allows.)"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from sandbox.api.auth import Caller, caller, governance
from sandbox.api.events import job_events, last_event_id
from sandbox.api.problems import problem
from sandbox.api.schemas import Admission, Id, JobOut, JobPage, ResultOut, RoundOut, RoundsOut
from sandbox.governance import Governance
from sandbox.protocol.jobspec import JobSpec
from sandbox.registry.models import Job
from sandbox.services import jobs as job_service
from sandbox.services import principals as principal_service
from sandbox.services import runs as run_service
from sandbox.services.views import FigureScope
from sandbox.vocabulary import JOB_ID_PATTERN, JobStatus

router = APIRouter(prefix="/jobs", tags=["engineers: jobs"])

JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="job id")]


def job_out(gov: Governance, job: Job) -> JobOut:
    """A job as the API answers it, with its admission decision's readable side."""
    out = JobOut.model_validate(job)
    if job.admission_decision:
        note = job_service.decision_note(gov, job.admission_decision)
        out.admission = (
            Admission.model_validate(note)
            if note is not None
            else Admission(
                decision_id=job.admission_decision,
                allowed=None,
                reasons=[],
                policies=[],
                ledger_index=None,
            )
        )
    return out


@router.post(
    "",
    status_code=201,
    response_model=JobOut,
    responses={403: {"description": "Admission denied: the job is filed as denied."}},
)
def file_job(
    spec: JobSpec,
    request: Request,
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> JobOut | JSONResponse:
    """File a job spec (validated; its hash is filed). The policy decides its admission at
    once: admitted, awaiting a regulator's approval (high tier, important-grade data), or
    denied (403, with the reasons and the id of the job filed as denied). Policy action:
    `submit_job`."""
    filed = job_service.file_job(gov, spec, me.facts)
    if not filed.allowed:
        return problem(
            request,
            403,
            f"Job {filed.job.id} was filed but not admitted: {' '.join(filed.reasons)}",
            "Denied by policy",
            "denied-by-policy",
            decision_id=filed.decision_id,
            reasons=list(filed.reasons),
            job_id=filed.job.id,
        )
    return job_out(gov, filed.job)


@router.get("", response_model=JobPage)
def list_jobs(
    engineer: Id | None = Query(None, description="the jobs this engineer filed"),
    company: Id | None = Query(None, description="the jobs this company takes part in"),
    status: JobStatus | None = Query(None),
    offset: int = Query(0, ge=0, le=1_000_000),
    limit: int = Query(50, ge=1, le=500),
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> JobPage:
    """Jobs, newest first. An engineer lists their own (`?engineer=<you>`), a company those it
    takes part in (`?company=<you>`); regulators and the operator list all. Policy action:
    `list_jobs`."""
    jobs = job_service.list_jobs(gov, me.facts, engineer, company, status, offset, limit)
    return JobPage(jobs=[job_out(gov, j) for j in jobs], offset=offset, limit=limit)


@router.get("/{job_id}", response_model=JobOut)
def job(
    job_id: JobId, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> JobOut:
    """A job: its status, risk tier, admission decision (with the policy's reasons and the
    ledger index), approval. Policy action: `read_job`."""
    return job_out(gov, job_service.read_job(gov, me.facts, job_id, "status"))


@router.post("/{job_id}/start", status_code=202, response_model=JobOut)
def start(
    job_id: JobId,
    request: Request,
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> JobOut:
    """Start the job's run in the background; follow it at `/jobs/{job_id}/events`. Policy
    action: `start_job` (the filing engineer; high-tier jobs only once approved)."""
    launcher = request.app.state.runs
    return job_out(gov, run_service.start_job(gov, me.facts, job_id, launcher.launch))


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-sent events: `status`, `round` (id: the round number), "
            "and a last `end`.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
def events(
    job_id: JobId,
    request: Request,
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> StreamingResponse:
    """Follow a job's progress as server-sent events until it ends. Reconnect with
    `Last-Event-ID` to get only later rounds. Policy action: `read_job` (recorded at connect;
    the token and the decision are checked again every few seconds, and the stream ends when
    either fails). At most 4 streams per principal."""
    job_service.read_job(gov, me.facts, job_id, "events")
    state = request.app.state
    slot = state.streams.take(f"{me.who.role}:{me.who.id}")

    def recheck() -> FigureScope:
        who = principal_service.reauthenticate(gov, me.token_id)
        return job_service.recheck_job_read(gov, who.facts, job_id)

    stream = job_events(
        gov, job_id, slot, state.stream_limits, state.stopping, recheck, last_event_id(request)
    )
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        background=BackgroundTask(slot.release),
    )


@router.get("/{job_id}/rounds", response_model=RoundsOut)
def rounds(
    job_id: JobId, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> RoundsOut:
    """The job's rounds: who was asked, who took part, who was missing and why, metrics.
    Policy action: `read_job`."""
    job, records = job_service.job_rounds(gov, me.facts, job_id)
    return RoundsOut(
        job_id=job.id, status=job.status, rounds=[RoundOut.model_validate(r) for r in records]
    )


@router.get("/{job_id}/result", response_model=ResultOut)
def result(
    job_id: JobId, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> ResultOut:
    """The result of a completed job: the model's hash and each company's metrics, local-only
    and federated. Policy action: `read_job`."""
    job = job_service.job_result(gov, me.facts, job_id)
    assert job.result is not None
    return ResultOut(job_id=job.id, status=job.status, model_hash=job.model_hash, result=job.result)
