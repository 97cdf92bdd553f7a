"""A job's event stream outlives nothing that made it allowed: revoke the token (or disable
the principal) and the stream ends within seconds, saying why; one principal holds at most a
few streams. Against the API under uvicorn, read as a client reads a stream."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from policies.facts import CompanyFacts
from sandbox.api.events import StreamLimits, StreamSlots, TooManyStreams
from sandbox.services import principals as principal_service
from tests.api.conftest import World
from tests.support.serving import serving

LIMITS = StreamLimits(poll_seconds=0.1, keepalive=0.5, max_seconds=60, recheck_seconds=1.0)


@pytest.fixture(scope="module")
def server(world: World) -> Iterator[str]:
    with serving(world.settings, stream_limits=LIMITS) as url:
        yield url


def test_a_stream_ends_within_5_seconds_of_its_token_s_revocation(
    world: World, server: str
) -> None:
    job = world.admitted_job()
    token = world.new_token("company")
    _, record = principal_service.authenticate(world.gov, token)
    lines: list[str] = []
    with httpx.stream(
        "GET", f"{server}/jobs/{job}/events",
        headers={"Authorization": f"Bearer {token}"}, timeout=15,
    ) as answer:  # fmt: skip
        assert answer.status_code == 200
        revoked_at = None
        for line in answer.iter_lines():
            lines.append(line)
            if revoked_at is None and line.startswith("event: status"):
                principal_service.revoke_token(
                    world.gov, CompanyFacts("construction", "Construction"), record.id
                )
                revoked_at = time.monotonic()
            if line.startswith("data:") and "access ended" in line:
                break
        assert revoked_at is not None
        elapsed = time.monotonic() - revoked_at
    assert elapsed < 5, elapsed
    assert any("the token was revoked" in line for line in lines), lines


def test_one_principal_holds_at_most_a_few_streams(world: World, server: str) -> None:
    slots = StreamSlots(limit=32, per_principal=2)
    first, _ = slots.take("company:a"), slots.take("company:a")
    with pytest.raises(TooManyStreams, match="holds 2 event streams"):
        slots.take("company:a")
    other = slots.take("company:b")  # another principal is not held back
    first.release()
    slots.take("company:a").release()
    other.release()

    # Over HTTP: with the principal's four slots taken, a fifth stream is refused with 429.
    job = world.admitted_job()
    state = world.app.state
    held = [state.streams.take("company:construction") for _ in range(LIMITS.per_principal)]
    try:
        refused = world.client.get(f"/jobs/{job}/events", headers=world.headers("company"))
        assert refused.status_code == 429 and "holds 4 event streams" in refused.json()["detail"]
        other_reader = world.client.get(f"/jobs/{job}/events", headers=world.headers("engineer"))
        assert other_reader.status_code == 200
    finally:
        for slot in held:
            slot.release()
