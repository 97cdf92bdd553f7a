"""The operator: register principals (engineers, regulators, operators) with their public
keys, disable them, and activate a policy set the regulator signed."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Path

from sandbox.api.auth import Caller, caller, governance
from sandbox.api.schemas import (
    PolicyActivation,
    PolicyInfo,
    PolicySetOut,
    PrincipalIn,
    PrincipalOut,
)
from sandbox.governance import Governance
from sandbox.services import base as base_service
from sandbox.services import policy_sets as policy_set_service
from sandbox.services import principals as principal_service
from sandbox.vocabulary import ID_PATTERN

router = APIRouter(prefix="/operator", tags=["operator"])

PrincipalId = Annotated[str, Path(pattern=ID_PATTERN, description="a principal's id")]


@router.post("/principals", status_code=201, response_model=PrincipalOut)
def register_principal(
    body: PrincipalIn, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> PrincipalOut:
    """Register an engineer, regulator or operator with its Ed25519 public key; it then gets
    tokens by signing requests with that key. Policy action: `register_principal`."""
    principal = principal_service.register_principal(
        gov, me.facts, body.id, body.role, body.public_key, body.organisation, body.endorsement
    )
    return PrincipalOut.model_validate(principal)


@router.get("/principals", response_model=list[PrincipalOut])
def list_principals(
    me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> list[PrincipalOut]:
    """The registered principals. Policy action: `read_registry`."""
    return [
        PrincipalOut.model_validate(p) for p in principal_service.list_principals(gov, me.facts)
    ]


@router.post("/principals/{principal_id}/disable", response_model=PrincipalOut)
def disable_principal(
    principal_id: PrincipalId, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> PrincipalOut:
    """Disable a principal: its tokens are revoked at once and it gets no new ones. Policy
    action: `register_principal`."""
    return PrincipalOut.model_validate(
        principal_service.disable_principal(gov, me.facts, principal_id)
    )


def _policy_set(gov: Governance) -> PolicySetOut:
    active = gov.pdp.active
    assert active is not None  # the governance never starts without an active set
    return PolicySetOut(
        hash=active.hash,
        policies=[
            PolicyInfo(id=p.id, effect=p.effect, file=p.file, reason=p.reason)
            for p in active.policies
        ],
        tiers={
            name: {
                key: str(value) if isinstance(value, Decimal) else value
                for key, value in dataclasses.asdict(params).items()
            }
            for name, params in active.tiers.tiers.items()
        },
    )


@router.get("/policy-set", response_model=PolicySetOut)
def policy_set(me: Caller = Depends(caller), gov: Governance = Depends(governance)) -> PolicySetOut:
    """The active policy set: its hash, its policies with their reasons, its tiers. Policy
    action: `read_registry`."""
    base_service.read_registry(gov, me.facts, "policy_set")
    return _policy_set(gov)


@router.post("/policy-set", response_model=PolicySetOut)
def activate_policy_set(
    body: PolicyActivation, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> PolicySetOut:
    """Activate a policy set: only with a valid regulator signature over its hash
    (`sandbox policy sign`) and files that validate; the attempt is recorded either way.
    Policy action: `activate_policy`."""
    files = {name: text.encode("utf-8") for name, text in body.files.items()}
    policy_set_service.activate_policy_set(gov, me.facts, files, body.signature)
    return _policy_set(gov)
