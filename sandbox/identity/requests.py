"""Signed requests a principal makes with its own key on its own machine: a token request
(``POST /auth/token``) and a company's join request (``POST /companies``).

A token request is the signature over::

    sandbox-api-token-request/v2
    <role>
    <principal id>
    <timestamp, RFC 3339 UTC, within five minutes of the server's clock>
    <nonce, 16 to 128 URL-safe characters>
    <ttl_seconds, the token's life asked for>

(so that whoever relays a signed request cannot stretch the token's life).

A join request is the signature over ``sandbox-api-join/v1\\n`` + the exact body bytes.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandbox.identity import public_b64, sign
from sandbox.utc import rfc3339, utcnow

TOKEN_REQUEST_DOMAIN = "sandbox-api-token-request/v2"
DEFAULT_TOKEN_SECONDS = 8 * 3600
JOIN_DOMAIN = b"sandbox-api-join/v1\n"
CLOCK_SKEW = timedelta(minutes=5)
NONCE_PATTERN = r"^[A-Za-z0-9_-]{16,128}$"


def token_request_message(
    role: str, principal_id: str, timestamp: str, nonce: str, ttl_seconds: int
) -> bytes:
    """The bytes a principal signs to ask for a token."""
    fields = (TOKEN_REQUEST_DOMAIN, role, principal_id, timestamp, nonce, str(ttl_seconds))
    return "\n".join(fields).encode()


def sign_token_request(
    key: Ed25519PrivateKey,
    role: str,
    principal_id: str,
    now: datetime | None = None,
    nonce: str | None = None,
    ttl_seconds: int = DEFAULT_TOKEN_SECONDS,
) -> dict[str, Any]:
    """A signed token request (the body of ``POST /auth/token``)."""
    stamp = rfc3339(now or utcnow())
    nonce = nonce or secrets.token_urlsafe(24)
    message = token_request_message(role, principal_id, stamp, nonce, ttl_seconds)
    return {
        "role": role,
        "principal_id": principal_id,
        "timestamp": stamp,
        "nonce": nonce,
        "ttl_seconds": ttl_seconds,
        "signature": sign(key, message),
    }


def join_request(
    key: Ed25519PrivateKey,
    company_id: str,
    name: str,
    industry: str,
    manifest: Any = None,
    purposes: tuple[str, ...] = (),
    valid_days: int = 365,
    now: datetime | None = None,
) -> tuple[bytes, str]:
    """A company's signed join request: the body of ``POST /companies`` and the value of its
    ``X-Sandbox-Signature`` header. ``manifest`` is the filled-in dataset manifest, if any."""
    document = {
        "company_id": company_id,
        "name": name,
        "industry": industry,
        "public_key": public_b64(key),
        "manifest": manifest.model_dump(mode="json") if manifest is not None else None,
        "purposes": list(purposes),
        "valid_days": valid_days,
        "signed_at": rfc3339(now or utcnow()),
    }
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return body, sign_join(key, body)


def sign_join(key: Ed25519PrivateKey, body: bytes) -> str:
    """The company's signature over a join request's exact body bytes."""
    return sign(key, JOIN_DOMAIN + body)
