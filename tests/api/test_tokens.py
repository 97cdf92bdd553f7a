"""Credentials: tokens for a signed request, never stored or logged in the clear, refused once
expired or revoked or when their principal is disabled; the browser session on the same
tokens, and its cross-site guard."""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, select

from policies.facts import OperatorFacts
from sandbox import identity
from sandbox.identity.requests import sign_token_request
from sandbox.node.home import NodeHome
from sandbox.registry.models import ApiToken
from sandbox.services import principals as principal_service
from sandbox.vocabulary import OPERATOR_ID
from tests.api.conftest import World


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_signed_request_gets_a_token_that_works(world: World) -> None:
    body = sign_token_request(world.keys["eve"], "engineer", "eve")
    response = world.client.post("/auth/token", json=body)
    assert response.status_code == 201, response.text
    issued = response.json()
    assert issued["token_type"] == "Bearer" and issued["principal_id"] == "eve"
    assert response.headers["cache-control"] == "no-store"
    me = world.client.get("/auth/tokens", headers=bearer(issued["token"]))
    assert me.status_code == 200
    assert me.json()["principal_id"] == "eve" and me.json()["token_id"] == issued["token_id"]
    # Stored as its SHA-256 only.
    with Session(world.gov.engine) as session:
        rows = session.exec(select(ApiToken)).all()
    stored = {r.token_sha256 for r in rows}
    assert hashlib.sha256(issued["token"].encode()).hexdigest() in stored
    assert all(issued["token"] not in str(r.model_dump()) for r in rows)


def test_the_token_s_life_is_signed_and_cannot_be_stretched(world: World) -> None:
    body = sign_token_request(world.keys["eve"], "engineer", "eve", ttl_seconds=600)
    stretched = world.client.post("/auth/token", json={**body, "ttl_seconds": 30 * 86400})
    assert stretched.status_code == 401 and "key that verifies" in stretched.json()["detail"]
    issued = world.client.post("/auth/token", json=body)
    assert issued.status_code == 201, issued.text
    life = datetime.fromisoformat(issued.json()["expires_at"]) - datetime.now(UTC)
    assert timedelta(seconds=590) < life <= timedelta(seconds=600)


def test_a_company_signs_with_the_key_it_joined_with(world: World) -> None:
    key = NodeHome(world.settings.company_dir("construction")).key()
    response = world.client.post(
        "/auth/token", json=sign_token_request(key, "company", "construction")
    )
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    assert world.client.get("/companies/construction", headers=bearer(token)).status_code == 200


def test_a_signed_request_serves_once(world: World) -> None:
    body = sign_token_request(world.keys["reg"], "regulator", "reg")
    assert world.client.post("/auth/token", json=body).status_code == 201
    again = world.client.post("/auth/token", json=body)
    assert again.status_code == 409 and "fresh nonce" in again.json()["detail"]


@pytest.mark.parametrize(
    "case", ["another key", "unknown principal", "wrong role", "stale", "from the future"]
)
def test_a_request_that_proves_nothing_gets_nothing(world: World, case: str) -> None:
    key, role, principal, now = world.keys["eve"], "engineer", "eve", datetime.now(UTC)
    if case == "another key":
        key = identity.generate_key()
    elif case == "unknown principal":
        principal = "nobody"
    elif case == "wrong role":
        role = "regulator"
    elif case == "stale":
        now -= timedelta(minutes=6)
    else:
        now += timedelta(minutes=6)
    before = world.ledger_size
    response = world.client.post(
        "/auth/token", json=sign_token_request(key, role, principal, now=now)
    )
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert world.ledger_size == before


def test_a_malformed_timestamp_is_named(world: World) -> None:
    body = sign_token_request(world.keys["eve"], "engineer", "eve") | {"timestamp": "yesterday"}
    response = world.client.post("/auth/token", json=body)
    assert response.status_code == 422 and "RFC 3339" in response.json()["detail"]


def test_an_expired_token_is_refused(world: World) -> None:
    token = world.new_token("engineer", ttl=timedelta(seconds=1))
    assert world.client.get("/auth/tokens", headers=bearer(token)).status_code == 200
    time.sleep(1.2)
    response = world.client.get("/auth/tokens", headers=bearer(token))
    assert response.status_code == 401 and "expired" in response.json()["detail"]


def test_a_revoked_token_is_refused_at_once(world: World) -> None:
    token = world.new_token("company")
    me = world.client.get("/auth/tokens", headers=bearer(token)).json()
    revoked = world.client.delete(f"/auth/tokens/{me['token_id']}", headers=bearer(token))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    response = world.client.get("/companies/construction", headers=bearer(token))
    assert response.status_code == 401 and "revoked" in response.json()["detail"]
    again = world.client.delete(f"/auth/tokens/{me['token_id']}", headers=world.headers("operator"))
    assert again.status_code == 409


def test_a_disabled_principal_loses_its_tokens_and_gets_no_new_one(world: World) -> None:
    key = identity.generate_key()
    principal_service.register_principal(
        world.gov, OperatorFacts(OPERATOR_ID), "temp-eng", "engineer", identity.public_b64(key)
    )
    token = principal_service.issue_token_locally(world.gov, "engineer", "temp-eng").token
    assert world.client.get("/auth/tokens", headers=bearer(token)).status_code == 200
    disabled = world.client.post(
        "/operator/principals/temp-eng/disable", headers=world.headers("operator")
    )
    assert disabled.status_code == 200 and disabled.json()["status"] == "disabled"
    assert world.client.get("/auth/tokens", headers=bearer(token)).status_code == 401
    before = world.ledger_size
    refused = world.client.post("/auth/token", json=sign_token_request(key, "engineer", "temp-eng"))
    assert refused.status_code == 403 and "baseline.account.active" in str(
        world.decisions_since(before)
    )


def test_malformed_and_unknown_tokens_are_refused(world: World) -> None:
    for header in ("Bearer nonsense", "Bearer sbx_" + "A" * 43, "Basic dXNlcjpwYXNz", "Bearer"):
        response = world.client.get("/auth/tokens", headers={"Authorization": header})
        assert response.status_code == 401, header


def test_tokens_never_reach_the_log(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = sign_token_request(world.keys["eve"], "engineer", "eve")
    token = world.client.post("/auth/token", json=body).json()["token"]
    world.client.get("/jobs?engineer=eve", headers=bearer(token))
    world.client.post("/auth/session", json={"token": token})
    world.client.cookies.clear()
    assert token not in caplog.text


def test_a_browser_session_uses_the_same_token_in_a_cookie(world: World) -> None:
    token = world.new_token("regulator")
    client = world.client
    client.cookies.clear()
    opened = client.post("/auth/session", json={"token": token})
    assert opened.status_code == 200 and opened.json()["role"] == "regulator"
    cookie = opened.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    # Reads work with the cookie alone.
    assert client.get("/approvals").status_code == 200
    # A change signed in by the cookie must come from this server's own pages.
    cross = client.post("/audit/verify")
    assert cross.status_code == 403 and cross.json()["title"] == "Cross-site request refused"
    same = client.post("/audit/verify", headers={"Origin": "http://testserver"})
    assert same.status_code == 200
    closed = client.delete("/auth/session", headers={"Origin": "http://testserver"})
    assert closed.status_code == 200 and closed.json()["revoked_at"]
    client.cookies.clear()
    assert client.get("/approvals", headers=bearer(token)).status_code == 401
