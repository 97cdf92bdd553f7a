"""Who is asking: the bearer token of a request, turned into a principal.

Authentication only; what the principal may do is decided by the policy in each operation.
A token comes in the ``Authorization: Bearer`` header or, for a browser, in the HttpOnly
session cookie that ``POST /auth/session`` sets (the web console builds on this). A request
authenticated by the cookie that changes something must come from this server's own origin
(``Origin`` header), so that another site cannot make a signed-in browser act.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from sandbox.errors import SandboxError, Unauthenticated
from sandbox.governance import Governance, get_governance
from sandbox.services.principals import Who, authenticate

SESSION_COOKIE = "sandbox_session"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="A token from `POST /auth/token` (or `sandbox token issue` on the server).",
)
cookie_scheme = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    description="The same token in an HttpOnly cookie, set by `POST /auth/session` (browsers).",
)


class CrossSiteRequest(SandboxError):
    status = 403
    title = "Cross-site request refused"


@dataclass(frozen=True)
class Caller:
    """The authenticated principal of a request and the token it used."""

    who: Who
    token_id: str
    via: str

    @property
    def facts(self) -> Any:
        """The principal's policy facts (the ``actor`` of the governed operations)."""
        return self.who.facts


def governance(request: Request) -> Governance:
    return get_governance(request.app.state.settings)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    return origin is not None and origin == f"{request.url.scheme}://{request.url.netloc}"


def caller(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
    session: str | None = Depends(cookie_scheme),
    gov: Governance = Depends(governance),
) -> Caller:
    """The request's principal; 401 without a valid token."""
    if credentials is not None:
        token, via = credentials.credentials, "bearer"
    elif session:
        token, via = session, "cookie"
    else:
        raise Unauthenticated(
            "this endpoint needs a token: send 'Authorization: Bearer <token>' (get one with "
            "POST /auth/token, signed with your key)"
        )
    who, record = authenticate(gov, token)
    if via == "cookie" and request.method not in SAFE_METHODS and not _same_origin(request):
        raise CrossSiteRequest(
            "a request signed in by the session cookie that changes something must come from "
            "this server's own pages (its Origin header did not match)"
        )
    return Caller(who, record.id, via)
