"""Offline, hardened pages: the API documentation is served from assets packaged with the
sandbox (``fastapi-offline``'s Swagger UI and ReDoc; nothing loads from a CDN, so it works on
a machine without internet), and every response carries ``X-Content-Type-Options: nosniff``
and a Content-Security-Policy (the console's pages set their own, stricter for scripts);
responses over TLS also carry HSTS.

The documentation pages' one inline script is allowed by its SHA-256 in their CSP, not by
``'unsafe-inline'``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/docs/assets"
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
HSTS = "max-age=31536000; includeSubDomains"
_INLINE = re.compile(r"<script>(.*?)</script>", re.S)


def _with_script_hashes(page: HTMLResponse) -> HTMLResponse:
    body = bytes(page.body).decode("utf-8")
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in _INLINE.findall(body)
    )
    page.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src blob:; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return page


def install(app: FastAPI) -> None:
    """Serve ``/docs`` and ``/redoc`` from packaged assets; security headers everywhere."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return _with_script_hashes(
            get_swagger_ui_html(
                openapi_url="/openapi.json",
                title=f"{app.title}: documentation",
                swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            )
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _with_script_hashes(
            get_redoc_html(
                openapi_url="/openapi.json",
                title=f"{app.title}: reference",
                redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
                with_google_fonts=False,
            )
        )

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Content-Security-Policy", API_CSP)
        headers.setdefault("Referrer-Policy", "no-referrer")
        if request.url.scheme == "https":
            headers.setdefault("Strict-Transport-Security", HSTS)
        return response
