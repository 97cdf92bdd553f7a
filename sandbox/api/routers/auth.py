"""Every principal: get an API token with a signed request, list and revoke tokens, and the
browser session (the same token in an HttpOnly cookie)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from sandbox.api.auth import SESSION_COOKIE, Caller, caller, governance
from sandbox.api.schemas import (
    Id,
    Me,
    SessionOut,
    SessionRequest,
    TokenInfo,
    TokenIssued,
    TokenRequest,
)
from sandbox.governance import Governance
from sandbox.services import principals as principal_service
from sandbox.utc import utcnow
from sandbox.vocabulary import Role

router = APIRouter(prefix="/auth", tags=["auth (every principal)"])

TokenId = Annotated[str, Path(pattern=r"^tok-[0-9a-f]{12}$", description="a token's id")]


@router.post("/token", status_code=201, response_model=TokenIssued)
def issue_token(
    body: TokenRequest, response: Response, gov: Governance = Depends(governance)
) -> TokenIssued:
    """Get a bearer token by proving possession of your Ed25519 key: sign
    `sandbox-api-token-request/v2\\n<role>\\n<principal_id>\\n<timestamp>\\n<nonce>\\n<ttl_seconds>`
    (the token's life is part of what you sign; `sandbox token sign-request` does it). Policy
    action: `manage_tokens`."""
    issued = principal_service.issue_token(
        gov,
        body.role,
        body.principal_id,
        body.timestamp,
        body.nonce,
        body.signature,
        timedelta(seconds=body.ttl_seconds),
    )
    response.headers["Cache-Control"] = "no-store"  # a credential: no cache may keep it
    return TokenIssued(
        token=issued.token,
        token_id=issued.record.id,
        role=issued.record.role,
        principal_id=issued.record.principal_id,
        expires_at=issued.record.expires_at,
    )


@router.get("/tokens", response_model=Me)
def list_tokens(
    role: Role | None = Query(None, description="whose tokens (default: yours)"),
    principal_id: Id | None = Query(None, description="whose tokens (default: yours)"),
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> Me:
    """Who you are and the tokens you (or, for the operator, anyone) hold; never the tokens
    themselves. Policy action: `manage_tokens`."""
    tokens = principal_service.list_tokens(
        gov, me.facts, role or me.who.role, principal_id or me.who.id
    )
    return Me(
        role=me.who.role,
        principal_id=me.who.id,
        organisation=me.who.organisation,
        token_id=me.token_id,
        tokens=[TokenInfo.model_validate(t) for t in tokens],
    )


@router.delete("/tokens/{token_id}", response_model=TokenInfo)
def revoke_token(
    token_id: TokenId, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> TokenInfo:
    """Revoke a token at once. Policy action: `manage_tokens`."""
    return TokenInfo.model_validate(principal_service.revoke_token(gov, me.facts, token_id))


@router.post("/session", response_model=SessionOut)
def open_session(
    body: SessionRequest,
    request: Request,
    response: Response,
    gov: Governance = Depends(governance),
) -> SessionOut:
    """Sign a browser in: the token goes into an HttpOnly, SameSite=Strict cookie, which then
    authenticates the browser's requests like the bearer header. Policy action:
    `manage_tokens`."""
    who, record = principal_service.authenticate(gov, body.token)
    principal_service.open_session(gov, who)
    expires = record.expires_at
    response.headers["Cache-Control"] = "no-store"
    response.set_cookie(
        SESSION_COOKIE,
        body.token,
        max_age=max(1, int((expires - utcnow()).total_seconds())),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return SessionOut(role=who.role, principal_id=who.id, expires_at=expires)


@router.delete("/session", response_model=TokenInfo)
def close_session(
    response: Response, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> TokenInfo:
    """Sign out: the token of this request is revoked and the cookie cleared. Policy action:
    `manage_tokens`."""
    revoked = principal_service.revoke_token(gov, me.facts, me.token_id)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return TokenInfo.model_validate(revoked)
