"""The ledger's witnesses as the sandbox knows them: every company (its node cosigns with the
company's key, through the coordinator) and every active regulator (with ``sandbox audit
witness``, through ``POST /audit/cosignatures``). The policy set's ``witness_quorum`` says
how many cosignatures make a checkpoint "witnessed".

Reading the witness status is an audit read (``read_audit``); handing in a cosignature is
``witness_checkpoint``, and the cosignature must verify with the registered key of the
principal who hands it in, under that principal's id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from policies.facts import AuditLogFacts
from sandbox.errors import Conflict, Invalid, NotFound
from sandbox.governance import Annotation, Governance
from sandbox.ledger.checkpoint import SIGNATURE_LINE_PREFIX
from sandbox.ledger.errors import CheckpointError, LedgerError, LedgerWriteError
from sandbox.ledger.witness import WitnessKey, witnessed_by
from sandbox.registry.companies import all_companies
from sandbox.registry.principals import all_principals
from sandbox.services.audit import authorize_audit_read
from sandbox.services.base import authorize


@dataclass(frozen=True)
class WitnessedCheckpoint:
    size: int
    cosigners: tuple[str, ...]


@dataclass(frozen=True)
class WitnessStatus:
    """How far the ledger's history is witnessed."""

    quorum: int
    witnesses: int
    """Registered witnesses: companies and active regulators."""
    checkpoints: int
    witnessed: int
    """Checkpoints carrying at least ``quorum`` cosignatures of registered witnesses."""
    latest_witnessed: WitnessedCheckpoint | None
    latest_cosigned: WitnessedCheckpoint | None
    """The largest checkpoint with any cosignature (it may be short of the quorum)."""


def witness_keys(gov: Governance) -> dict[str, str]:
    """Every registered witness's name and public key (a regulator's id is never shadowed by
    a company's)."""
    keys = {
        p.id: p.public_key
        for p in all_principals(gov.engine)
        if p.role == "regulator" and p.status == "active"
    }
    for company in all_companies(gov.engine):
        keys.setdefault(company.id, company.public_key)
    return keys


def cosigners(note: str, keys: dict[str, str]) -> tuple[str, ...]:
    """The registered witnesses whose cosignature on ``note`` verifies."""
    names = {
        line[len(SIGNATURE_LINE_PREFIX) :].split(" ", 1)[0]
        for line in note[note.rfind("\n\n") + 2 :].splitlines()
        if line.startswith(SIGNATURE_LINE_PREFIX)
    }
    known = [WitnessKey(name, keys[name]) for name in sorted(names) if name in keys]
    return tuple(witnessed_by(note, known))


def witness_status(gov: Governance, actor: Any) -> WitnessStatus:
    """Every checkpoint's cosignatures counted against the policy set's quorum (an audit
    read)."""
    authorize_audit_read(gov, actor)
    return count_witnesses(gov)


def count_witnesses(gov: Governance) -> WitnessStatus:
    """:func:`witness_status` for a caller whose audit read was decided already."""
    quorum = gov.tiers.witness_quorum
    keys = witness_keys(gov)
    counted = [
        WitnessedCheckpoint(signed.size, cosigners(signed.note, keys))
        for signed in gov.ledger.checkpoints()
    ]
    witnessed = [c for c in counted if len(c.cosigners) >= quorum]
    cosigned = [c for c in counted if c.cosigners]
    return WitnessStatus(
        quorum=quorum,
        witnesses=len(keys),
        checkpoints=len(counted),
        witnessed=len(witnessed),
        latest_witnessed=witnessed[-1] if witnessed else None,
        latest_cosigned=cosigned[-1] if cosigned else None,
    )


def add_cosignature(gov: Governance, actor: Any, size: int, line: str) -> WitnessedCheckpoint:
    """Store a regulator's (or a company's) cosignature of the checkpoint of ``size``; it
    must verify with the registered key of whoever hands it in, under their id."""
    authorize(
        gov,
        actor,
        "witness_checkpoint",
        AuditLogFacts(),
        annotation=Annotation(resource_kind="ledger", resource_id=str(size)),
    )
    keys = witness_keys(gov)
    if actor.id not in keys:
        raise NotFound(f"{actor.id} is not a registered witness")
    if not any(c.size == size for c in gov.ledger.checkpoints()):
        raise NotFound(f"the ledger holds no signed checkpoint of size {size}")
    try:
        gov.ledger.add_cosignature(size, line, WitnessKey(actor.id, keys[actor.id]))
    except CheckpointError as exc:
        raise Invalid(f"the cosignature was refused: {exc}") from None
    except LedgerWriteError:
        raise
    except LedgerError as exc:
        raise Conflict(str(exc)) from None
    stored = next(c for c in gov.ledger.checkpoints() if c.size == size)
    return WitnessedCheckpoint(size, cosigners(stored.note, keys))
