"""The sandbox's HTTP API: a face on the governed operations, one router per role.

``create_app(settings)`` builds the app for one installation: it starts the installation's
governance (the policy decision point and the ledger; the first start bootstraps the policy
set) and makes sure the operator principal exists (its key is the sandbox's operator key).
Every endpoint but ``/health``, ``/auth/token`` and the company's signed join needs a token,
and every one of those asks the policy, whose decision is in the ledger before it is used.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi

from sandbox.api import hardening, problems
from sandbox.api.events import StreamLimits, StreamSlots
from sandbox.api.failures import AuthFailures, TooManyFailures
from sandbox.api.guard import DEFAULT_MAX_BODY, InputGuard
from sandbox.api.routers import (
    applications,
    auth,
    companies,
    jobs,
    operators,
    regulators,
    releases,
    settlements,
    witnesses,
)
from sandbox.api.schemas import Health
from sandbox.config import Settings, load_settings
from sandbox.console import mount as mount_console
from sandbox.governance import get_governance
from sandbox.runtime.runs import JobRuns
from sandbox.services.principals import ensure_operator

DESCRIPTION = """
The regulatory data sandbox: companies train models together by federated learning without
handing over their data; a policy engine decides every action; a tamper-evident ledger
records every decision.

**Authentication.** Get a token with `POST /auth/token`, a request signed with your Ed25519
key, then send `Authorization: Bearer <token>`. Companies join with `POST /companies`, signed
with the key they register.

**Authorization.** Every request is decided by the policy (its action is named in each
endpoint's description) and the decision is recorded in the ledger, reads included. A denial
is a `403` problem whose `reasons` say why and whose `decision_id` finds it in the ledger.

**Errors** are RFC 9457 problem details (`application/problem+json`).
"""


def create_app(
    settings: Settings | None = None,
    *,
    run_capacity: int = 1,
    stream_limits: StreamLimits | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    auth_failure_limit: int = 20,
) -> FastAPI:
    settings = settings or load_settings()
    gov = get_governance(settings)
    ensure_operator(gov)
    runs = JobRuns(settings, capacity=run_capacity)
    stopping = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        stopping.set()
        runs.stop_all()

    app = FastAPI(
        title="Regulatory data sandbox API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    limits = stream_limits or StreamLimits()
    app.state.settings = settings
    app.state.runs = runs
    app.state.stopping = stopping
    app.state.stream_limits = limits
    app.state.streams = StreamSlots(limits.max_streams, limits.per_principal)
    app.state.governance = gov
    app.state.auth_failures = AuthFailures(limit=auth_failure_limit)
    problems.install(app)

    @app.middleware("http")
    async def throttle(request: Request, call_next: Any) -> Any:
        """A source over its limit of failed authentications waits out the minute."""
        try:
            request.app.state.auth_failures.check(request)
        except TooManyFailures as exc:
            return problems.problem(request, 429, str(exc), exc.title,
                                    headers={"Retry-After": str(exc.retry_after)})  # fmt: skip
        return await call_next(request)

    app.add_middleware(InputGuard, max_body=max_body)
    for router in (auth.router, companies.router, jobs.router, regulators.router,
                   witnesses.router, settlements.router):  # fmt: skip
        app.include_router(router)
    app.include_router(operators.router)
    app.include_router(applications.router)
    app.include_router(releases.router)
    mount_console(app)
    hardening.install(app)

    @app.get("/health", response_model=Health, tags=["health"])
    def health(request: Request) -> Health:
        """Liveness for compose health checks: the database answers. No token needed."""
        get_governance(request.app.state.settings).ledger.size  # noqa: B018 - a database round trip
        return Health(status="ok")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = problems.document(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def shutdown_signal(app: FastAPI) -> None:
    """Tell the app's streams to end: the server is going down (called on SIGINT/SIGTERM
    before the server waits for open connections). A second signal while the first is being
    handled must not set the event again: ``Event.set`` takes a lock that the interrupted
    first call may hold, and the handler would wait for itself. The flag is set first (one
    assignment, which no signal splits)."""
    if getattr(app.state, "stop_signalled", False):
        return
    app.state.stop_signalled = True
    app.state.stopping.set()
