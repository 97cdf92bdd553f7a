"""Errors as RFC 9457 problem details (``application/problem+json``).

One set of handlers for the whole API: the registry's errors (not found, conflict, invalid,
denied by policy, not authenticated), request validation (with the path of every field at
fault), HTTP errors of the framework (an unknown path, a method not allowed), the ledger's
errors, and anything unforeseen, which becomes a 500 whose body says nothing of the cause
(the cause goes to the server's log, with the request id the client is given).
"""

from __future__ import annotations

import logging
import uuid
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from sandbox.api.auth import CrossSiteRequest
from sandbox.errors import Forbidden, SandboxError
from sandbox.ledger import EntryNotFound, LedgerError, LedgerIntegrityError, LedgerWriteError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:sandbox:problem:"
MAX_DETAIL = 4000

_SLUGS = {
    400: "bad-request",
    401: "not-authenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "too-large",
    415: "unsupported-media-type",
    422: "invalid-request",
    429: "too-many-requests",
    500: "internal-error",
    503: "unavailable",
}


class FieldProblem(BaseModel):
    """One field at fault: where (``location``, e.g. ``body.privacy.dp.epsilon``) and what."""

    location: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem: ``type`` names the kind of problem, ``title`` says it in words,
    ``detail`` says what to do about this occurrence, ``instance`` is the request's path."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["urn:sandbox:problem:denied-by-policy"])
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    instance: str
    decision_id: str | None = Field(
        default=None, description="the policy decision that denied the request (in the ledger)"
    )
    reasons: list[str] | None = Field(default=None, description="the policy's reasons")
    errors: list[FieldProblem] | None = Field(default=None, description="fields at fault")
    request_id: str | None = Field(default=None, description="quote it when reporting a 500")


def problem(
    request: Request,
    status: int,
    detail: str,
    title: str | None = None,
    kind: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem response for ``request``."""
    body = Problem(
        type=TYPE_PREFIX + (kind or _SLUGS.get(status, "error")),
        title=title or HTTPStatus(status).phrase,
        status=status,
        detail=detail[:MAX_DETAIL],
        instance=request.url.path,
        **extra,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "request"


async def _registry_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SandboxError)
    extra: dict[str, Any] = {}
    headers = None
    kind = None
    if isinstance(exc, Forbidden):
        kind = "denied-by-policy"
        if exc.decision_id:
            extra = {"decision_id": exc.decision_id, "reasons": list(exc.reasons)}
    if exc.status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="sandbox"'}
    if exc.status == 401 or isinstance(exc, CrossSiteRequest):
        failures = getattr(request.app.state, "auth_failures", None)
        if failures is not None:
            failures.failed(request, request.app.state.governance, type(exc).__name__)
    retry = getattr(exc, "retry_after", None)
    if retry is not None:
        headers = {"Retry-After": str(retry)}
    return problem(request, exc.status, str(exc), exc.title, kind, headers, **extra)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        FieldProblem(location=_location(tuple(e.get("loc", ()))), message=str(e.get("msg", "")))
        for e in exc.errors()[:50]
    ]
    listed = "; ".join(f"{e.location}: {e.message}" for e in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return problem(
        request,
        422,
        f"The request does not fit the API; correct these fields: {listed}{more}.",
        "Invalid request",
        "validation-error",
        errors=[e.model_dump() for e in errors],
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 400 and detail == "There was an error parsing the body":
        detail = (
            "The body could not be read; send a JSON document with Content-Type: application/json."
        )
    elif exc.status_code == 404 and detail == "Not Found":
        detail = f"There is no {request.url.path} here; see /docs for the API's paths."
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        detail = f"{request.method} is not allowed on {request.url.path}; use {', '.join(allowed)}."
        headers = {**(headers or {}), "Allow": ", ".join(allowed)}
    return problem(request, exc.status_code, detail, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method that some route serves at this path (a path's methods may be spread over
    several routes; the framework's own answer names only the first route's)."""
    methods: set[str] = set()
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.routes):
            methods.add(method)
    return sorted(methods)


async def _value_error(request: Request, exc: Exception) -> JSONResponse:
    # The service functions raise ValueError for input they refuse (as the CLI reports it).
    return problem(request, 422, str(exc) or "The request is not valid.", "Invalid request")


async def _ledger_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, EntryNotFound):
        return problem(request, 404, str(exc), "Not found")
    if isinstance(exc, LedgerWriteError):
        log.error("ledger write failed: %s", exc)
        return problem(
            request,
            503,
            "The audit ledger cannot be written just now, so nothing was done; try again later.",
            "Ledger unavailable",
            headers={"Retry-After": "10"},
        )
    if isinstance(exc, LedgerIntegrityError):
        log.error("ledger integrity: %s", exc)
        return problem(
            request, 500, f"The ledger failed an integrity check: {exc}", "Ledger integrity failure"
        )
    return problem(request, 409, str(exc), "Conflict with the ledger's state")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    request_id = uuid.uuid4().hex
    log.error(
        "request %s %s failed (request id %s)",
        request.method,
        request.url.path,
        request_id,
        exc_info=exc,
    )
    return problem(
        request,
        500,
        f"The server could not complete the request. It was logged as {request_id}; "
        "quote that id when you report it.",
        "Internal error",
        request_id=request_id,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(SandboxError, _registry_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(LedgerError, _ledger_error)
    app.add_exception_handler(ValueError, _value_error)
    app.add_exception_handler(Exception, _unexpected)


ERROR_STATUSES = {
    401: "Not authenticated: no token, or a token that is unknown, expired or revoked.",
    403: "Denied by policy (the decision is in the ledger; `reasons` say why).",
    404: "Not found.",
    409: "Conflicts with the current state (e.g. the job is not awaiting approval).",
    413: "The request body is too large.",
    422: "The request does not fit the API; `errors` name the fields.",
    429: "Too many requests of this kind at once; retry later.",
}


def document(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the problem responses to every operation of an OpenAPI document, as
    ``application/problem+json``, replacing the framework's default 422 body."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components["FieldProblem"] = FieldProblem.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    for key in ("$defs",):
        for name, definition in components["Problem"].pop(key, {}).items():
            components.setdefault(name, definition)
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for status, description in ERROR_STATUSES.items():
                responses[str(status)] = {"description": description, "content": content}
            responses["default"] = {"description": "Any other problem.", "content": content}
    return schema
