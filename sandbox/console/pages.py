"""The console's pages: server-rendered, each one a face on the same governed operations the
API's routers call, so that every page's permission is the policy's decision and is in the
ledger exactly as the API's equivalent read would be.

Who is asking comes from the API's own ``caller`` dependency (the session cookie that
``POST /auth/session`` sets, or a bearer header); a page without a valid token sends the
browser to the sign-in page, and a denial renders a 403 page that names the decision.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from sandbox.api.auth import Caller, caller, governance
from sandbox.console.frame import (
    ACTION,
    ID,
    JOB_ID,
    PAGE_SIZE,
    STATUSES,
    ConsoleRoute,
    clean,
    form_fields,
    moment,
    page,
    whole,
)
from sandbox.errors import Invalid, NotFound
from sandbox.governance import Governance
from sandbox.identity import public_b64
from sandbox.ledger import verify_checkpoint
from sandbox.ledger.errors import CheckpointError
from sandbox.reports import plots
from sandbox.reports.document import build_report, render_html, render_json, report_plots
from sandbox.services import audit as audit_service
from sandbox.services import companies as company_service
from sandbox.services import jobs as job_service
from sandbox.services import settlements as settlement_service
from sandbox.services import witnesses as witness_service

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


def _is_company(me: Caller) -> bool:
    return me.who.role == "company"


def _witness_alarms(gov: Governance, company_id: str) -> list[dict[str, object]]:
    """The alarms the company's node raised as a witness of the ledger, as the ledger
    recorded them (index, time, the checkpoint size refused), newest first."""
    found = gov.ledger.stored_entries(action="ledger.witness_alarm", company=company_id, limit=20)
    alarms = []
    for item in reversed(found):
        try:
            record = json.loads(item.entry)
        except ValueError:
            continue
        details = record.get("details") or {}
        alarms.append({"index": item.index, "time": record.get("time"),
                       "size": details.get("checkpoint_size")})  # fmt: skip
    return alarms


# ------------------------------------------------------------------------------ sign in
@router.get("/sign-in", name="sign_in")
def sign_in(request: Request, next: str = "/console") -> HTMLResponse:
    """Paste a token; the page's script hands it to ``POST /auth/session``."""
    target = next if next.startswith("/console") and "//" not in next else "/console"
    return page(request, "sign_in.html", None, next=target)


# ----------------------------------------------------------------------------- overview
@router.get("", name="overview")
def overview(
    request: Request, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> Response:
    """Ledger size, the latest signed checkpoint and whether it verifies, jobs by state,
    the approval queue: reads of the whole ledger and of all jobs, which the policy allows a
    regulator (a company's credentials get the policy's 403, recorded)."""
    signed = audit_service.audit_checkpoint(gov, me.facts)
    try:
        verify_checkpoint(signed.note, gov.ledger.public_key, origin=gov.ledger.origin)
        verified, problem = True, None
    except CheckpointError as exc:
        verified, problem = False, str(exc)
    witnessing = witness_service.count_witnesses(gov)  # the same read, decided above
    counts = job_service.job_counts(gov, me.facts)
    queue = job_service.list_jobs(gov, me.facts, status="awaiting_approval", limit=PAGE_SIZE)
    return page(
        request,
        "overview.html",
        me,
        checkpoint=signed,
        witnessing=witnessing,
        verified=verified,
        problem=problem,
        size=gov.ledger.size,
        counts=[(s, counts.get(s, 0)) for s in STATUSES],
        queue=queue,
        public_key=public_b64(gov.ledger.public_key),
        origin=gov.ledger.origin,
        proof_json=json.dumps(
            {
                "checkpoint": signed.note,
                "public_key": public_b64(gov.ledger.public_key),
                "origin": gov.ledger.origin,
            }
        ),
    )


# -------------------------------------------------------------------------------- audit
@router.get("/audit", name="audit")
def audit(
    request: Request, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> HTMLResponse:
    """The ledger, filtered and paged by index (``after``: the last index of the page before)."""
    q = request.query_params
    filters = {
        "since": (q.get("since") or "").strip(),
        "until": (q.get("until") or "").strip(),
        "company": clean(q.get("company"), ID, "company"),
        "job": clean(q.get("job"), JOB_ID, "job"),
        "action": clean(q.get("action"), ACTION, "action"),
        "actor": clean(q.get("actor"), ID, "actor"),
        "decision": q.get("decision") if q.get("decision") in ("allow", "deny") else None,
    }
    if _is_company(me) and filters["company"] is None:
        filters["company"] = me.who.id  # a company reads the entries about itself
    after = whole(q.get("after"), "after", -1, -1, 2**53 - 1)
    limit = whole(q.get("limit"), "limit", PAGE_SIZE, 1, 500)
    found = audit_service.audit_entries(
        gov,
        me.facts,
        company=filters["company"],
        job=filters["job"],
        after_index=after,
        limit=limit,
        since=moment(filters["since"], "since"),
        until=moment(filters["until"], "until"),
        principal=filters["actor"],
        action=filters["action"],
        allowed=None if filters["decision"] is None else filters["decision"] == "allow",
    )
    kept = {k: v for k, v in filters.items() if v} | (
        {"limit": limit} if limit != PAGE_SIZE else {}
    )
    next_url = (
        "/console/audit?" + urlencode({**kept, "after": found[-1].index})
        if len(found) == limit
        else None
    )
    first_url = "/console/audit?" + urlencode(kept) if after >= 0 else None
    return page(
        request,
        "audit.html",
        me,
        entries=found,
        filters=filters,
        after=after,
        next_url=next_url,
        first_url=first_url,
        scope_query=urlencode({k: filters[k] for k in ("company", "job") if filters[k]}),
    )


@router.get("/audit/{index}", name="entry")
def entry(
    request: Request,
    index: int,
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> HTMLResponse:
    """One entry, readable and as canonical JSON, with its inclusion proof and the signed
    checkpoint, which the page's script verifies in the browser."""
    if not 0 <= index <= 2**53 - 1:
        raise Invalid("an index is a whole number from 0")
    q = request.query_params
    company = clean(q.get("company"), ID, "company")
    job = clean(q.get("job"), JOB_ID, "job")
    if _is_company(me) and company is None:
        company = me.who.id
    item, proof, signed = audit_service.audit_entry(gov, me.facts, index, company, job)
    record = item.record
    note = None
    if record is not None and record.decision is not None:
        note = job_service.decision_note(gov, record.decision.decision_id)
    try:
        pretty = json.dumps(json.loads(item.entry), indent=2, sort_keys=True, ensure_ascii=False)
    except ValueError:
        pretty = None
    data = {
        "index": item.index,
        "tree_size": proof.tree_size,
        "leaf_hash": proof.leaf_hash.hex(),
        "audit_path": [h.hex() for h in proof.hashes],
        "checkpoint": signed.note,
        "entry": item.entry.decode("utf-8"),
        "public_key": public_b64(gov.ledger.public_key),
        "origin": gov.ledger.origin,
    }
    return page(
        request,
        "entry.html",
        me,
        item=item,
        record=record,
        note=note,
        pretty=pretty,
        proof=proof,
        checkpoint=signed,
        proof_json=json.dumps(data),
        public_key=data["public_key"],
    )


# --------------------------------------------------------------------------------- jobs
@router.get("/jobs", name="jobs")
def jobs(
    request: Request, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> HTMLResponse:
    """Jobs, newest first: all for a regulator and the operator, those it takes part in for a
    company, those they filed for an engineer."""
    q = request.query_params
    status = q.get("status") if q.get("status") in STATUSES else None
    offset = whole(q.get("offset"), "offset", 0, 0, 1_000_000)
    company = me.who.id if _is_company(me) else None
    engineer = me.who.id if me.who.role == "engineer" else None
    found = job_service.list_jobs(
        gov, me.facts, engineer, company, status=status, offset=offset, limit=PAGE_SIZE
    )
    more = {k: v for k, v in (("status", status),) if v}
    return page(
        request,
        "jobs.html",
        me,
        jobs=found,
        status=status,
        statuses=STATUSES,
        next_url="/console/jobs?" + urlencode({**more, "offset": offset + PAGE_SIZE})
        if len(found) == PAGE_SIZE
        else None,
    )


@router.get("/jobs/{job_id}", name="job")
def job(
    request: Request,
    job_id: str,
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> HTMLResponse:
    """A job: filed spec and hash, admission, approval, rounds, release, model hash, plots.
    A regulator's page rests on the job's compliance summary (an audit read of the job); a
    company sees the job's status and rounds (a read of the job)."""
    clean(job_id, JOB_ID, "job id")
    overview = job_service.job_overview(gov, me.facts, job_id)
    found, rounds = overview.job, overview.rounds
    report = figures = None
    if not _is_company(me):
        summary = audit_service.compliance_summary(gov, me.facts, job_id)
        report = build_report(gov, job_id, summary)
        figures = report_plots(report)
    else:
        figures = {
            "metric": plots.line_chart(
                [(r.number, (r.metrics.get("evaluation") or {}).get("mean_auc")) for r in rounds],
                title="Mean AUC of the federated model per round",
                x_label="round",
                y_label="mean AUC",
                y_max=1.0,
            )
        }
    decision = overview.admission
    settlement = None
    if found.status == "completed":
        try:
            settlement = settlement_service.settlement_of(gov, me.facts, job_id)
        except NotFound:  # not settled yet
            settlement = None
    return page(
        request,
        "job.html",
        me,
        job=found,
        spec=json.dumps(found.spec, indent=2, sort_keys=True),
        admission=decision,
        rounds=rounds,
        report=report,
        plots=figures,
        settlement=settlement,
        flash=request.query_params.get("done"),
    )


@router.post("/jobs/{job_id}/approve", name="approve")
async def approve(
    request: Request,
    job_id: str,
    fields: dict[str, str] = Depends(form_fields),
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> Response:
    """The regulator's approval, through the same governed operation as the API's."""
    clean(job_id, JOB_ID, "job id")
    job_service.approve_job(
        gov,
        me.facts,
        job_id,
        fields.get("note", "").strip(),
        fields.get("signed_at", ""),
        fields.get("signature", ""),
    )
    return RedirectResponse(f"/console/jobs/{job_id}?done=approved", status_code=303)


@router.post("/jobs/{job_id}/reject", name="reject")
async def reject(
    request: Request,
    job_id: str,
    fields: dict[str, str] = Depends(form_fields),
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> Response:
    """The regulator's rejection with a reason, through the API's governed operation."""
    clean(job_id, JOB_ID, "job id")
    job_service.reject_job(gov, me.facts, job_id, fields.get("reason", ""))
    return RedirectResponse(f"/console/jobs/{job_id}?done=rejected", status_code=303)


@router.get("/jobs/{job_id}/report.{kind}", name="report")
def report_download(
    job_id: str,
    kind: str,
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> Response:
    """The compliance report as a file: self-contained HTML, or the same facts as JSON."""
    clean(job_id, JOB_ID, "job id")
    if kind not in ("html", "json"):
        raise Invalid("a report is html or json")
    made = audit_service.compliance_report(gov, me.facts, job_id)
    body, media = (
        (render_html(made), "text/html")
        if kind == "html"
        else (render_json(made), "application/json")
    )
    return Response(
        body,
        media_type=f"{media}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="compliance-{job_id}.{kind}"'},
    )


# ---------------------------------------------------------------------------- companies
@router.get("/companies", name="companies")
def companies(
    request: Request, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> Response:
    return page(
        request, "companies.html", me, companies=company_service.list_companies(gov, me.facts)
    )


@router.get("/companies/{company_id}", name="company")
def company(
    request: Request,
    company_id: str,
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> HTMLResponse:
    """A company's datasets (grade, manifest), consents, every use of its data (receipts)
    and the privacy spent: each a governed read, as the API's company endpoints."""
    clean(company_id, ID, "company id")
    after = whole(request.query_params.get("after"), "after", 0, 0, 2**53 - 1)
    profile = company_service.company_data(gov, me.facts, company_id, "profile")
    datasets = company_service.company_datasets(gov, me.facts, company_id)
    consents = company_service.company_consents(gov, me.facts, company_id)
    receipts = company_service.company_receipts(gov, me.facts, company_id, after, PAGE_SIZE)
    spends = company_service.company_spend(gov, me.facts, company_id)
    return page(
        request,
        "company.html",
        me,
        company=profile,
        witness_alarms=_witness_alarms(gov, company_id),
        datasets=datasets,
        consents=consents,
        receipts=receipts,
        spends=spends,
        privacy_plot=plots.bars(
            {s.job_id: s.epsilon for s in spends},
            title="Privacy budget spent per job (epsilon)",
            y_label="epsilon",
        )
        if spends
        else None,
        next_url=f"/console/companies/{company_id}?after={receipts[-1].id}#receipts"
        if len(receipts) == PAGE_SIZE
        else None,
    )
