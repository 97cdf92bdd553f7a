"""The console's pages: server-rendered, each one a face on the same governed operations the
API's routers call, so that every page's permission is the policy's decision and is in the
ledger exactly as the API's equivalent read would be.

Who is asking comes from the API's own ``caller`` dependency (the session cookie that
``POST /auth/session`` sets, or a bearer header); a page without a valid token sends the
browser to the sign-in page, and a denial renders a 403 page that names the decision.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from sandbox import operations
from sandbox.api.auth import Caller, caller, governance
from sandbox.governance import Governance
from sandbox.identity import public_b64
from sandbox.ledger import LedgerError, verify_checkpoint
from sandbox.ledger.errors import CheckpointError, LedgerIntegrityError
from sandbox.principals import Unauthenticated
from sandbox.registry import service
from sandbox.registry.errors import Invalid, RegistryError
from sandbox.reports import plots
from sandbox.reports.document import build_report, render_html, render_json, report_plots

HERE = Path(__file__).parent
PAGE_SIZE = 50
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/=+-]{0,127}$")
ACTION = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){0,3}$")
STATUSES = (
    "filed", "denied", "awaiting_approval", "approved", "rejected", "admitted", "running",
    "completed", "failed", "stopped",
)  # fmt: skip
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: under it a browser sends "Origin: null" with a form post, and the
    # same-origin check on cookie-authenticated writes would refuse the console's own forms.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def relative(value: datetime | None, now: datetime | None = None) -> str:
    """'3 min ago', 'in 2 h': a hint beside a UTC timestamp."""
    if value is None:
        return ""
    now = now or datetime.now(UTC)
    seconds = (now - service.as_utc(value)).total_seconds()
    ahead, seconds = seconds < 0, abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            amount = f"{int(seconds // size)} {unit}"
            break
    else:
        return "just now"
    return f"in {amount}" if ahead else f"{amount} ago"


def utc(value: datetime | None) -> str:
    return "" if value is None else service.as_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")


templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters["utc"] = utc
templates.env.filters["relative"] = relative
templates.env.filters["num"] = lambda v, d=3: "–" if v is None else f"{v:.{d}f}"
templates.env.filters["script_json"] = lambda text: Markup(
    text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
)  # JSON inside <script type="application/json">: nothing in it can close the element
templates.env.filters["iso"] = lambda v: "" if v is None else service.as_utc(v).isoformat()


class ConsoleRoute(APIRoute):
    """Console pages answer in HTML: no token sends the browser to sign in; a refusal, a
    missing object or a ledger failure is a page saying so, with its status (never a 5xx for
    what the registry or the ledger reports)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await original(request)
            except Unauthenticated as exc:
                if request.method == "GET":
                    target = request.url.path + (
                        f"?{request.url.query}" if request.url.query else ""
                    )
                    response = RedirectResponse(
                        f"/console/sign-in?next={quote(target, safe='')}", status_code=303
                    )
                else:
                    response = error_page(request, exc.status, exc.title, str(exc))
            except RegistryError as exc:
                response = error_page(
                    request,
                    exc.status,
                    exc.title,
                    str(exc),
                    decision_id=getattr(exc, "decision_id", None),
                    reasons=getattr(exc, "reasons", ()),
                )
            except LedgerIntegrityError as exc:
                response = error_page(
                    request, 409, "The ledger failed an integrity check", str(exc)
                )
            except LedgerError as exc:
                response = error_page(request, 409, "Conflict with the ledger's state", str(exc))
            response.headers.update(SECURITY_HEADERS)
            return response

        return handler


router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


def page(
    request: Request, template: str, me: Caller | None, http_status: int = 200, **context: Any
) -> HTMLResponse:
    return templates.TemplateResponse(
        request, template, {"me": me, "now": datetime.now(UTC), **context}, status_code=http_status
    )


def error_page(
    request: Request,
    status: int,
    title: str,
    detail: str,
    decision_id: str | None = None,
    reasons: Any = (),
) -> HTMLResponse:
    return page(
        request,
        "error.html",
        None,
        http_status=status,
        status_code=status,
        title=title,
        detail=detail,
        decision_id=decision_id,
        reasons=list(reasons or ()),
    )


def _clean(value: str | None, pattern: re.Pattern[str], name: str) -> str | None:
    """A filter from a form: empty means none; anything else must fit its pattern."""
    value = (value or "").strip()
    if not value:
        return None
    if not pattern.fullmatch(value):
        raise Invalid(f"{name} {value[:60]!r} is not a valid {name}")
    return value


def _int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    value = (value or "").strip()
    if not value:
        return default
    if not re.fullmatch(r"-?[0-9]{1,16}", value) or not low <= int(value) <= high:
        raise Invalid(f"{name} must be a whole number from {low} to {high}")
    return int(value)


def _time(value: str | None, name: str) -> datetime | None:
    """A time from a datetime-local field (or ISO 8601), taken as UTC when it has no zone."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(f"{name} {value[:40]!r} is not a date and time") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


async def form_fields(request: Request) -> dict[str, str]:
    """The fields of an ``application/x-www-form-urlencoded`` post (one value each)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {key: values[0] for key, values in parse_qs(body, max_num_fields=20).items()}


def _is_company(me: Caller) -> bool:
    return me.who.role == "company"


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
    signed = operations.audit_checkpoint(gov, me.who)
    try:
        verify_checkpoint(signed.note, gov.ledger.public_key, origin=gov.ledger.origin)
        verified, problem = True, None
    except CheckpointError as exc:
        verified, problem = False, str(exc)
    counts = operations.job_counts(gov, me.facts)
    queue = operations.list_jobs(gov, me.facts, status="awaiting_approval", limit=PAGE_SIZE)
    return page(
        request,
        "overview.html",
        me,
        checkpoint=signed,
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
        "company": _clean(q.get("company"), ID, "company"),
        "job": _clean(q.get("job"), JOB_ID, "job"),
        "action": _clean(q.get("action"), ACTION, "action"),
        "actor": _clean(q.get("actor"), ID, "actor"),
        "decision": q.get("decision") if q.get("decision") in ("allow", "deny") else None,
    }
    if _is_company(me) and filters["company"] is None:
        filters["company"] = me.who.id  # a company reads the entries about itself
    after = _int(q.get("after"), "after", -1, -1, 2**53 - 1)
    limit = _int(q.get("limit"), "limit", PAGE_SIZE, 1, 500)
    found = operations.audit_entries(
        gov,
        me.who,
        company=filters["company"],
        job=filters["job"],
        after_index=after,
        limit=limit,
        since=_time(filters["since"], "since"),
        until=_time(filters["until"], "until"),
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
    company = _clean(q.get("company"), ID, "company")
    job = _clean(q.get("job"), JOB_ID, "job")
    if _is_company(me) and company is None:
        company = me.who.id
    item, proof, signed = operations.audit_entry(gov, me.who, index, company, job)
    record = item.record
    note = None
    if record is not None and record.decision is not None:
        note = service.policy_decision(gov.engine, record.decision.decision_id)
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
    """Jobs, newest first: all for a regulator, those it takes part in for a company."""
    q = request.query_params
    status = q.get("status") if q.get("status") in STATUSES else None
    offset = _int(q.get("offset"), "offset", 0, 0, 1_000_000)
    company = me.who.id if _is_company(me) else None
    found = operations.list_jobs(
        gov, me.facts, company=company, status=status, offset=offset, limit=PAGE_SIZE
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
    _clean(job_id, JOB_ID, "job id")
    found = operations.read_job(gov, me.facts, job_id, "console")
    rounds = service.job_rounds(gov.engine, job_id)
    report = figures = None
    if not _is_company(me):
        summary = operations.compliance_summary(gov, me.who, job_id)
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
    decision = service.policy_decision(gov.engine, found.admission_decision or "")
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
    _clean(job_id, JOB_ID, "job id")
    operations.approve_job(gov, me.facts, job_id, fields.get("note", "").strip())
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
    _clean(job_id, JOB_ID, "job id")
    operations.reject_job(gov, me.facts, job_id, fields.get("reason", ""))
    return RedirectResponse(f"/console/jobs/{job_id}?done=rejected", status_code=303)


@router.get("/jobs/{job_id}/report.{kind}", name="report")
def report_download(
    job_id: str,
    kind: str,
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> Response:
    """The compliance report as a file: self-contained HTML, or the same facts as JSON."""
    _clean(job_id, JOB_ID, "job id")
    if kind not in ("html", "json"):
        raise Invalid("a report is html or json")
    made = operations.compliance_report(gov, me.who.role, me.who.id, job_id)
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
    return page(request, "companies.html", me, companies=operations.list_companies(gov, me.facts))


@router.get("/companies/{company_id}", name="company")
def company(
    request: Request,
    company_id: str,
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> HTMLResponse:
    """A company's datasets (grade, manifest), consents, every use of its data (receipts)
    and the privacy spent: each a governed read, as the API's company endpoints."""
    _clean(company_id, ID, "company id")
    after = _int(request.query_params.get("after"), "after", 0, 0, 2**53 - 1)
    profile = operations.company_data(gov, me.facts, company_id, "profile")
    datasets = operations.company_datasets(gov, me.facts, company_id)
    consents = operations.company_consents(gov, me.facts, company_id)
    receipts = operations.company_receipts(gov, me.facts, company_id, after, PAGE_SIZE)
    spends = operations.company_spend(gov, me.facts, company_id)
    return page(
        request,
        "company.html",
        me,
        company=profile,
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
