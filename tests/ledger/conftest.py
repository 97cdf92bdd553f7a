"""The tampering tests' ledger, on SQLite and (marked ``postgres``) on PostgreSQL: 40 entries
with a checkpoint signed every 10. Modules that define their own ``settings`` or ``ledger``
fixtures keep them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.config import Settings, load_settings
from sandbox.ledger import Ledger
from tests.ledger.helpers import fill, open_ledger

SIZE = 40
CHECKPOINT_EVERY = 10


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(
    request: pytest.FixtureRequest, tmp_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    if request.param == "postgres":
        monkeypatch.setenv("SANDBOX_DATABASE_URL", request.getfixturevalue("pg_url"))
    yield load_settings()


@pytest.fixture
def ledger(settings: Settings) -> Ledger:
    """A ledger of 40 entries with a signed checkpoint every 10."""
    ledger = open_ledger(settings)
    for start in range(0, SIZE, CHECKPOINT_EVERY):
        fill(ledger, CHECKPOINT_EVERY, start=start)
        ledger.checkpoint()
    return ledger
