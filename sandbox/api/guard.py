"""The API's first line: bounded request bodies and JSON that every part of the sandbox can
store.

Before any route sees a request, its body must be at most ``max_body`` bytes, and a JSON body
must hold only what the registry, the policies and the ledger can all take: strings without
control characters (tab, newline and carriage return aside) or unpaired surrogates, numbers
that are finite and, for integers, within ±(2**53 - 1) (I-JSON, RFC 7493), and nesting at most
32 deep. Anything else is refused here with a problem response that says where, so that bad
input never reaches a database (where a NUL character or an overlong integer would fail as a
server error) and never leaves half-written state.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.api.problems import problem

MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 32
DEFAULT_MAX_BODY = 1 << 20
_UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


class BodyProblem(ValueError):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def _constant(name: str) -> Any:
    raise BodyProblem(422, f"the body holds {name}, which is not a JSON number")


def check_json(body: bytes) -> None:
    """Raise BodyProblem if ``body`` is JSON that the sandbox cannot store; leave bodies that
    are not JSON at all to the framework's own validation."""
    try:
        document = json.loads(body, parse_constant=_constant)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return
    except RecursionError:
        raise BodyProblem(422, f"the body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # e.g. an integer of thousands of digits
        if isinstance(exc, BodyProblem):
            raise
        raise BodyProblem(422, f"the body is not usable JSON: {exc}") from None
    stack: list[tuple[Any, str, int]] = [(document, "body", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BodyProblem(422, f"the body nests deeper than {MAX_DEPTH} levels at {where}")
        if isinstance(value, str):
            if _UNSTORABLE.search(value):
                raise BodyProblem(
                    422,
                    f"field {where} holds a control character or an unpaired surrogate; text may hold "
                    "printable characters, tabs and line breaks only",
                )
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            if abs(value) > MAX_SAFE_INTEGER:
                raise BodyProblem(
                    422,
                    f"field {where} is an integer beyond ±{MAX_SAFE_INTEGER}; no field takes one",
                )
        elif isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise BodyProblem(422, f"field {where} is not a finite number")
        elif isinstance(value, dict):
            for key, item in value.items():
                if _UNSTORABLE.search(key):
                    raise BodyProblem(422, f"a key in {where} holds a control character")
                stack.append((item, f"{where}.{key[:64]}", depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{where}.{i}", depth + 1) for i, item in enumerate(value))


class InputGuard:
    """ASGI middleware: bounds the body, checks JSON bodies, then replays the body to the app."""

    def __init__(self, app: ASGIApp, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        declared = request.headers.get("content-length")
        if declared is not None and not declared.isdigit():
            await self._refuse(
                scope, receive, send, 400, "the Content-Length header is not a number"
            )
            return
        if declared is not None and int(declared) > self.max_body:
            await self._refuse(scope, receive, send, 413, self._too_large())
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await self._refuse(scope, receive, send, 413, self._too_large())
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if body and (content_type == "application/json" or content_type.endswith("+json")):
            try:
                check_json(body)
            except BodyProblem as exc:
                await self._refuse(scope, receive, send, exc.status, str(exc))
                return

        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_body} bytes"

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
        titles = {400: "Bad request", 413: "Request body too large"}
        text = detail[:1].upper() + detail[1:] + "."
        response = problem(Request(scope), status, text, titles.get(status, "Invalid request"))
        await response(scope, receive, send)
