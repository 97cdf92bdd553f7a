"""The ledger's witnesses: how far its history is witnessed (the policy set's quorum, the
latest witnessed checkpoint), and a witness handing in its cosignature (a regulator running
``sandbox audit witness``, or a company)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from sandbox.api.auth import Caller, caller, governance
from sandbox.governance import Governance
from sandbox.services import witnesses as witness_service
from sandbox.services.witnesses import WitnessedCheckpoint

router = APIRouter(tags=["regulators: approvals and audit"])


class WitnessedOut(BaseModel):
    size: int
    cosigners: list[str] = Field(description="registered witnesses whose cosignature verifies")


class WitnessStatusOut(BaseModel):
    quorum: int = Field(description="cosignatures that make a checkpoint witnessed (policy set)")
    witnesses: int = Field(description="registered witnesses: companies and active regulators")
    checkpoints: int
    witnessed: int = Field(description="checkpoints carrying the quorum")
    latest_witnessed: WitnessedOut | None
    latest_cosigned: WitnessedOut | None


class CosignatureIn(BaseModel):
    size: int = Field(ge=0, le=2**53 - 1, description="the size of the checkpoint cosigned")
    cosignature: str = Field(
        min_length=8,
        max_length=400,
        description="the C2SP cosignature/v1 line, under the caller's own id",
    )


def _out(found: WitnessedCheckpoint | None) -> WitnessedOut | None:
    return None if found is None else WitnessedOut(size=found.size, cosigners=list(found.cosigners))


@router.get("/audit/witnesses", response_model=WitnessStatusOut)
def witnesses(
    me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> WitnessStatusOut:
    """Every checkpoint's cosignatures counted against the policy set's witness quorum.
    Policy action: `read_audit`."""
    status = witness_service.witness_status(gov, me.facts)
    return WitnessStatusOut(
        quorum=status.quorum,
        witnesses=status.witnesses,
        checkpoints=status.checkpoints,
        witnessed=status.witnessed,
        latest_witnessed=_out(status.latest_witnessed),
        latest_cosigned=_out(status.latest_cosigned),
    )


@router.post("/audit/cosignatures", status_code=201, response_model=WitnessedOut)
def cosign(
    body: CosignatureIn, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> WitnessedOut:
    """Hand in the caller's cosignature of the stored checkpoint of `size` (it must verify
    with the caller's registered key); answers who has cosigned it now. Policy action:
    `witness_checkpoint`."""
    found = witness_service.add_cosignature(gov, me.facts, body.size, body.cosignature)
    return WitnessedOut(size=found.size, cosigners=list(found.cosigners))
