"""The HTTP API: a FastAPI app with one router per role, calling the governed operations."""

from sandbox.api.app import create_app

__all__ = ["create_app"]
