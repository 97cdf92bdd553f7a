"""The regulator's web console at ``/console``: server-rendered pages (Jinja2), plain CSS and
a little vanilla JavaScript, which verifies ledger proofs in the browser with WebCrypto.

:func:`mount` adds it to the API's app; every page calls the same governed operations as the
API's routers.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from sandbox.console.frame import HERE
from sandbox.console.pages import router


def mount(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
