"""Failed authentication leaves a bounded trace in the ledger and is rate-limited: a flood of
bad tokens from one source adds at most two entries a minute, then gets 429 with
Retry-After, while another source is not held back; the source is kept only as a keyed
hash, never as an address."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from sandbox.api import create_app
from sandbox.api.failures import AuthFailures
from tests.api.conftest import World


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def strict(world: World) -> Iterator[tuple[TestClient, Clock]]:
    clock = Clock()
    app = create_app(world.settings, run_capacity=0, auth_failure_limit=5)
    app.state.auth_failures = AuthFailures(limit=5, clock=clock)
    with TestClient(app) as client:
        yield client, clock


def auth_entries(world: World, since: int) -> list[dict[str, object]]:
    records = [json.loads(e.entry) for e in world.gov.ledger.entries(after_index=since - 1)]
    return [r for r in records if str(r["action"]).startswith("auth.")]


def test_a_flood_of_bad_tokens_is_recorded_boundedly_and_then_refused(
    world: World, strict: tuple[TestClient, Clock]
) -> None:
    client, clock = strict
    before = world.ledger_size
    bad = {"Authorization": "Bearer sbx_" + "A" * 43}
    statuses = [client.get("/companies", headers=bad).status_code for _ in range(12)]
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
    limited = client.get("/companies", headers=bad)
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # A good token from the same source waits too; the minute is the source's.
    assert client.get("/companies", headers=world.headers("regulator")).status_code == 429
    recorded = auth_entries(world, before)
    assert [r["action"] for r in recorded] == ["auth.failed", "auth.rate_limited"]
    assert recorded[1]["details"]["failures"] == 5  # type: ignore[index]
    assert "testclient" not in json.dumps(recorded)  # the address is never written
    # A bad signature on a token request and a bad join signature count the same way.
    clock.now += 60
    signed = client.post("/auth/token", json={"role": "engineer", "principal_id": "eve",
                                               "timestamp": "2026-01-01T00:00:00Z",
                                               "nonce": "n" * 20, "signature": "A" * 86 + "==",
                                               "ttl_seconds": 3600})  # fmt: skip
    assert signed.status_code == 401
    assert client.get("/companies", headers=world.headers("regulator")).status_code == 200
    assert [r["action"] for r in auth_entries(world, before)][-1] == "auth.failed"
