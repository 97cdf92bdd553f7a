"""Records and ledgers for the ledger tests."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from sandbox.config import Settings
from sandbox.ledger import Actor, DecisionRef, Ledger, LedgerRecord, Privacy, Purpose, Resource
from sandbox.ledger.merkle import CompactRange, leaf_hash

BASE_TIME = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
COMPANIES = ("acme-bank", "zeta-health", "orbit-retail")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_record(number: int, **overrides: Any) -> LedgerRecord:
    """A realistic record; ``number`` varies the actor, owner, job, verdict and time."""
    owner = COMPANIES[number % len(COMPANIES)]
    fields: dict[str, Any] = {
        "record_id": f"rec-{number}",
        "time": BASE_TIME + timedelta(minutes=number),
        "action": "dataset.read" if number % 4 else "job.admit",
        "actor": Actor(
            principal=f"engineer:e{number % 5}", role="engineer", organisation="sandbox-lab"
        ),
        "resource": Resource(
            kind="dataset",
            id=f"{owner}/loans",
            owner=owner,
            content_hash=digest(f"dataset-{owner}"),
            grade="important",
        ),
        "purpose": Purpose(
            name="credit-risk", legal_basis="consent", consent_id=f"consent-{owner}"
        ),
        "decision": DecisionRef(
            decision_id=f"dec-{number}",
            allowed=number % 3 != 0,
            policies=["consent-covers-purpose", "grade-allowed"],
            policy_set_hash=digest("policies-v1"),
        ),
        "job_id": f"job-{number % 7}",
        "correlation_id": f"corr-{number}",
    }
    fields.update(overrides)
    return LedgerRecord(**fields)


def make_round_record(number: int, participants: list[str]) -> LedgerRecord:
    return LedgerRecord.round_record(
        record_id=f"round-{number}",
        time=BASE_TIME + timedelta(hours=number),
        actor=Actor(principal="coordinator", role="coordinator"),
        job_id="job-fl",
        round=number,
        participants=participants,
        privacy=Privacy(mechanism="dp-sgd", epsilon=3.0, delta=1e-5, epsilon_spent=0.4),
        model_hash=digest(f"model-{number}"),
        details={"rows": 1200, "rejected_updates": 0, "secure_aggregation": True},
    )


def open_ledger(settings: Settings) -> Ledger:
    return Ledger.open(settings)


def fill(ledger: Ledger, count: int, start: int = 0, batch: int = 500) -> None:
    for first in range(start, start + count, batch):
        last = min(first + batch, start + count)
        ledger.append_many([make_record(number) for number in range(first, last)])


def rehash_everything(engine: Engine) -> None:
    """What a careful forger would do after editing entries: recompute every stored hash
    (leaf hashes, roots after each entry, tree nodes) so that only signatures can tell."""
    with engine.begin() as conn:
        rows = conn.execute(text("SELECT idx, entry FROM ledger_entry ORDER BY idx")).all()
        tree = CompactRange.empty()
        conn.execute(text("DELETE FROM ledger_node"))
        for row in rows:
            leaf = leaf_hash(row.entry.encode())
            completed = tree.append(leaf)
            conn.execute(
                text("UPDATE ledger_entry SET leaf_hash = :leaf, tree_root = :root WHERE idx = :i"),
                {"leaf": leaf, "root": tree.root(), "i": row.idx},
            )
            for level, index, node in completed[1:]:
                conn.execute(
                    text("INSERT INTO ledger_node (level, idx, hash) VALUES (:l, :i, :h)"),
                    {"l": level, "i": index, "h": node},
                )


def operator_rewrites(ledger: Ledger, index: int, old: str, new: str) -> None:
    """What the operator, who holds the key and the signer's state file, can do: replace
    ``old`` by ``new`` in entry ``index``, re-hash everything, drop every checkpoint and
    forget what it signed, so that the next checkpoint signs the forged tree."""
    forged = ledger.entry(index).entry.decode().replace(old, new)
    with ledger.engine.begin() as conn:
        conn.execute(text("DELETE FROM ledger_checkpoint"))
        conn.execute(text("UPDATE ledger_entry SET entry = :e WHERE idx = :i"),
                     {"e": forged, "i": index})  # fmt: skip
    rehash_everything(ledger.engine)
    ledger._signer.path.unlink()
