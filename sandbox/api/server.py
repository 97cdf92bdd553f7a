"""``sandbox serve``: the API under uvicorn, shutting down cleanly.

On SIGINT or SIGTERM the app's event streams are told to end first (they would otherwise
hold the server open until their time limit), then uvicorn stops; the app's shutdown stops
any job run it started.
"""

from __future__ import annotations

from types import FrameType

import uvicorn
from fastapi import FastAPI

from sandbox.api.app import create_app, shutdown_signal
from sandbox.config import Settings


class SandboxServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.sandbox_app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        shutdown_signal(self.sandbox_app)
        super().handle_exit(sig, frame)


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: Settings | None = None,
    log_level: str = "info",
) -> None:
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    SandboxServer(config, app).run()
