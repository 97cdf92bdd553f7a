"""Companies' applications to join: the operator's and the regulators' review. The request
itself is ``POST /companies`` (signed with the key it registers; no token)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, StringConstraints

from sandbox.api.auth import Caller, caller, governance
from sandbox.api.schemas import Out, SandboxKeysOut, Strict
from sandbox.governance import Governance
from sandbox.services import applications as application_service

router = APIRouter(prefix="/applications", tags=["companies"])

ApplicationId = Annotated[str, Path(pattern=r"^app-[a-z0-9]{1,36}$", max_length=40)]


class ProposedConsent(BaseModel):
    id: str
    purpose: str
    expires_at: datetime


class ApplicationReceived(BaseModel):
    """The answer to every well-formed, signed request to join, whatever becomes of it: it
    tells nothing of which ids exist. Record the proposed consents in your node now; they
    are registered when the application is admitted."""

    status: Literal["received"] = "received"
    detail: str
    consents: list[ProposedConsent]
    sandbox_keys: SandboxKeysOut


class ApplicationOut(Out):
    id: str
    company_id: str
    name: str
    industry: str
    public_key: str
    manifest: dict[str, Any] | None
    consents: list[ProposedConsent]
    valid_days: int
    status: str
    submitted_at: datetime
    regulator_admitted_by: str | None
    regulator_admitted_at: datetime | None
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None


class AdmissionIn(Strict):
    """What the reviewer confirms of the application's declarations (required where a
    dataset declared non-personal has columns that look personal)."""

    industry: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    personal_data: bool


class RefusalIn(Strict):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)]


@router.get("", response_model=list[ApplicationOut])
def applications(
    status: Literal["pending", "admitted", "refused"] = Query("pending"),
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> list[ApplicationOut]:
    """Applications to join (pending ones by default), oldest first. Policy action:
    `review_application` (the operator and the regulators)."""
    found = application_service.list_applications(gov, me.facts, status)
    return [ApplicationOut.model_validate(a) for a in found]


@router.post("/{application_id}/admit", response_model=ApplicationOut)
def admit(
    application_id: ApplicationId,
    body: AdmissionIn | None = None,
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> ApplicationOut:
    """Admit an application: a regulator's admission is recorded on it; the operator's
    admits the company (it joins with the application's key, manifest and consents). Where
    the data is important or core, or personal data of a high-risk industry, a regulator
    admits first. The body confirms the declared industry and personal-data flag (recorded;
    required where a dataset declared non-personal has columns that look personal; a
    confirmation that differs from the declarations is refused with 422). Policy actions:
    `review_application`, then `join`, `register_dataset`, `grant_consent` as the company."""
    confirmed = (
        None
        if body is None
        else application_service.Confirmation(body.industry, body.personal_data)
    )
    admitted = application_service.admit(gov, me.facts, application_id, confirmed)
    return ApplicationOut.model_validate(admitted)


@router.post("/{application_id}/refuse", response_model=ApplicationOut)
def refuse(
    application_id: ApplicationId,
    body: RefusalIn,
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> ApplicationOut:
    """Refuse an application, with the reason. Policy action: `review_application`."""
    refused = application_service.refuse(gov, me.facts, application_id, body.reason)
    return ApplicationOut.model_validate(refused)
