"""The documentation and the console work on a machine without internet: a browser that may
reach nothing but loopback loads /docs, /redoc and the console's pages completely, with no
request refused and no script error; every response says nosniff and carries a CSP; HSTS
over TLS."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import pytest

from tests.api.conftest import World
from tests.console.test_browser import signed_in

pytestmark = pytest.mark.browser


def loopback_only(context: Any) -> list[str]:
    """Abort every request that leaves loopback; the list of those aborted."""
    blocked: list[str] = []

    def route(handle: Any) -> None:
        host = urlparse(handle.request.url).hostname or ""
        if host in ("127.0.0.1", "::1", "localhost") or handle.request.url.startswith("data:"):
            handle.continue_()
        else:
            blocked.append(handle.request.url)
            handle.abort()

    context.route("**/*", route)
    return blocked


def test_docs_and_console_load_with_the_network_off(
    world: World, server: str, browser: Any
) -> None:
    context = browser.new_context()
    blocked = loopback_only(context)
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
    assert "Regulatory data sandbox API" in page.inner_text(".swagger-ui .info .title")
    page.get_by_text("/audit/checkpoint", exact=True).first.wait_for(timeout=20_000)  # loaded
    page.goto(f"{server}/redoc")
    page.wait_for_selector("text=Regulatory data sandbox API", timeout=20_000)
    assert blocked == [] and errors == [], (blocked, errors)
    context.close()

    page = signed_in(browser, server, world.token("regulator"))
    blocked = loopback_only(page.context)
    for path in ("/console", "/console/audit", "/console/jobs", "/console/companies"):
        page.goto(server + path)
        page.wait_for_load_state("networkidle")
    assert blocked == []
    page.context.close()


def test_every_response_says_nosniff_and_carries_a_csp(world: World) -> None:
    for path, headers in (
        ("/health", {}),
        ("/openapi.json", {}),
        ("/docs", {}),
        ("/docs/assets/swagger-ui.css", {}),
        ("/console/static/console.js", {}),
        ("/companies", {}),  # a 401 problem
        ("/audit/checkpoint", world.headers("regulator")),
    ):
        answer = world.client.get(path, headers=headers)
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert "default-src 'none'" in answer.headers["content-security-policy"], path
        assert "strict-transport-security" not in answer.headers, path
    docs = world.client.get("/docs").headers["content-security-policy"]
    assert "'sha256-" in docs and "unsafe-inline" not in docs.split("script-src")[1].split(";")[0]
    secure = world.client.get("https://testserver/health")
    assert secure.headers["strict-transport-security"].startswith("max-age=")
