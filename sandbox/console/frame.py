"""What every console page shares: the templates and their filters, the security headers,
the answer for a refusal or a failure (a page, never a bare 5xx), and the parsing of the
filters and forms a page takes."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from sandbox.api.auth import Caller
from sandbox.errors import Invalid, SandboxError, Unauthenticated
from sandbox.ledger import LedgerError
from sandbox.ledger.errors import LedgerIntegrityError
from sandbox.utc import utcnow
from sandbox.vocabulary import JOB_ID_PATTERN, JobStatus

HERE = Path(__file__).parent
PAGE_SIZE = 50
JOB_ID = re.compile(JOB_ID_PATTERN)
ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/=+-]{0,127}$")
ACTION = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){0,3}$")
STATUSES = tuple(JobStatus)
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
    now = now or utcnow()
    seconds = (now - value).total_seconds()
    ahead, seconds = seconds < 0, abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            amount = f"{int(seconds // size)} {unit}"
            break
    else:
        return "just now"
    return f"in {amount}" if ahead else f"{amount} ago"


def utc(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters["utc"] = utc
templates.env.filters["relative"] = relative
templates.env.filters["num"] = lambda v, d=3: "–" if v is None else f"{v:.{d}f}"
templates.env.filters["script_json"] = lambda text: Markup(
    text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
)  # JSON inside <script type="application/json">: nothing in it can close the element
templates.env.filters["iso"] = lambda v: "" if v is None else v.isoformat()


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
            except SandboxError as exc:
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


def page(
    request: Request, template: str, me: Caller | None, http_status: int = 200, **context: Any
) -> HTMLResponse:
    return templates.TemplateResponse(
        request, template, {"me": me, "now": utcnow(), **context}, status_code=http_status
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


def clean(value: str | None, pattern: re.Pattern[str], name: str) -> str | None:
    """A filter from a form: empty means none; anything else must fit its pattern."""
    value = (value or "").strip()
    if not value:
        return None
    if not pattern.fullmatch(value):
        raise Invalid(f"{name} {value[:60]!r} is not a valid {name}")
    return value


def whole(value: str | None, name: str, default: int, low: int, high: int) -> int:
    value = (value or "").strip()
    if not value:
        return default
    if not re.fullmatch(r"-?[0-9]{1,16}", value) or not low <= int(value) <= high:
        raise Invalid(f"{name} must be a whole number from {low} to {high}")
    return int(value)


def moment(value: str | None, name: str) -> datetime | None:
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
