"""Companies: join, register dataset manifests, grant and revoke consent, and see every use
of their data (receipts) and the privacy budget spent, per job."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request

from sandbox.api.auth import Caller, caller, governance
from sandbox.api.routers.applications import ApplicationReceived, ProposedConsent
from sandbox.api.schemas import (
    CompanyOut,
    ConsentIn,
    ConsentOut,
    DatasetOut,
    JobSpendOut,
    JoinRequest,
    ReceiptOut,
    ReceiptPage,
    RefusalOut,
    RefusalsIn,
    RevocationIn,
    SandboxKeysOut,
    SpendOut,
)
from sandbox.data.manifest import DatasetManifest
from sandbox.governance import Governance
from sandbox.identity import key_id
from sandbox.services import applications as application_service
from sandbox.services import companies as company_service
from sandbox.services import consents as consent_service
from sandbox.services import nodes as node_service
from sandbox.services import principals as principal_service
from sandbox.services.warrants import sandbox_public_keys
from sandbox.vocabulary import ID_PATTERN

router = APIRouter(prefix="/companies", tags=["companies"])

CompanyId = Annotated[str, Path(pattern=ID_PATTERN, description="the company's id")]
ConsentId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")]


async def raw_body(request: Request) -> bytes:
    return await request.body()


@router.post("", status_code=202, response_model=ApplicationReceived)
def join(
    body: JoinRequest,
    request: Request,
    signature: Annotated[
        str | None,
        Header(
            alias="X-Sandbox-Signature",
            max_length=200,
            description="base64 Ed25519 signature by the joining company's key over "
            "'sandbox-api-join/v1\\n' + the exact body bytes",
        ),
    ] = None,
    raw: bytes = Depends(raw_body),
    gov: Governance = Depends(governance),
) -> ApplicationReceived:
    """Apply to join the sandbox. Needs no token: the request is signed with the key it
    registers. The application waits for the operator's admission (and a regulator's where
    the data asks for one, `/applications`); the answer is the same for every well-formed,
    signed request, and says nothing of which ids exist. Policy action: `join`."""
    principal_service.verify_join(body.public_key, body.signed_at, raw, signature)
    received = application_service.apply(
        gov,
        body.company_id,
        body.name,
        body.industry,
        body.public_key,
        body.manifest,
        tuple(body.purposes),
        body.valid_days,
        hashlib.sha256(raw).hexdigest(),
    )
    keys = sandbox_public_keys(gov)
    return ApplicationReceived(
        detail=application_service.RECEIVED,
        consents=[
            ProposedConsent(id=c.id, purpose=c.purpose, expires_at=c.expires_at)
            for c in received.consents
        ],
        sandbox_keys=SandboxKeysOut(
            operator=keys["operator"],
            regulator=keys["regulator"],
            operator_fingerprint=key_id(keys["operator"]),
            regulator_fingerprint=key_id(keys["regulator"]),
        ),
    )


@router.get("", response_model=list[CompanyOut])
def list_companies(
    me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> list[CompanyOut]:
    """The companies in the registry. Policy action: `read_registry`."""
    return [CompanyOut.model_validate(c) for c in company_service.list_companies(gov, me.facts)]


@router.get("/{company_id}", response_model=CompanyOut)
def company(
    company_id: CompanyId, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> CompanyOut:
    """A company's profile. Policy action: `read_company_data`."""
    return CompanyOut.model_validate(
        company_service.company_data(gov, me.facts, company_id, "profile")
    )


@router.get("/{company_id}/datasets", response_model=list[DatasetOut])
def datasets(
    company_id: CompanyId, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> list[DatasetOut]:
    """A company's dataset manifests. Policy action: `read_company_data`."""
    return [
        DatasetOut.model_validate(d)
        for d in company_service.company_datasets(gov, me.facts, company_id)
    ]


@router.post("/{company_id}/datasets", status_code=201, response_model=DatasetOut)
def register_dataset(
    company_id: CompanyId,
    manifest: DatasetManifest,
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> DatasetOut:
    """Register a dataset's manifest, as the company's node filled it in when it prepared its
    vault (row counts, content hash). Never rows. Policy action: `register_dataset`."""
    return DatasetOut.model_validate(
        company_service.register_dataset(gov, company_id, manifest, actor=me.facts)
    )


@router.get("/{company_id}/consents", response_model=list[ConsentOut])
def consents(
    company_id: CompanyId, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> list[ConsentOut]:
    """A company's consents, live, expired and revoked. Policy action: `read_company_data`."""
    return [
        ConsentOut.model_validate(c)
        for c in company_service.company_consents(gov, me.facts, company_id)
    ]


@router.post("/{company_id}/consents", status_code=201, response_model=ConsentOut)
def grant_consent(
    company_id: CompanyId,
    body: ConsentIn,
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> ConsentOut:
    """Grant consent of one dataset to one purpose. Policy action: `grant_consent`."""
    consent = consent_service.grant_consent(
        gov,
        company_id,
        body.dataset,
        body.purpose,
        timedelta(days=body.valid_days),
        node_dir=gov.settings.company_dir(company_id),
        actor=me.facts,
    )
    return ConsentOut.model_validate(consent)


@router.post("/{company_id}/consents/{consent_id}/revoke", response_model=ConsentOut)
def revoke_consent(
    company_id: CompanyId,
    consent_id: ConsentId,
    body: RevocationIn,
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> ConsentOut:
    """Revoke a consent: jobs using it go on without this company from their next round.
    Policy action: `revoke_consent`."""
    consent = consent_service.revoke_consent(
        gov,
        company_id,
        consent_id,
        body.reason,
        node_dir=gov.settings.company_dir(company_id),
        actor=me.facts,
    )
    return ConsentOut.model_validate(consent)


@router.get("/{company_id}/receipts", response_model=ReceiptPage)
def receipts(
    company_id: CompanyId,
    after: int = Query(0, ge=0, le=2**53 - 1, description="receipts after this receipt id"),
    limit: int = Query(100, ge=1, le=1000),
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> ReceiptPage:
    """Every use of the company's data: the receipts its node signed, in order. Policy
    action: `read_company_data`."""
    found = company_service.company_receipts(gov, me.facts, company_id, after, limit)
    return ReceiptPage(
        receipts=[ReceiptOut.model_validate(r) for r in found],
        next_after=found[-1].id if len(found) == limit else None,
    )


@router.get("/{company_id}/refusals", response_model=list[RefusalOut])
def refusals(
    company_id: CompanyId, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> list[RefusalOut]:
    """Every refusal of the company's node that reached the sandbox (through the coordinator,
    or handed over by the company): its signed notice, the node's reason, its ledger entry.
    Policy action: `read_company_data`."""
    return [RefusalOut.model_validate(r) for r in node_service.refusals(gov, me.facts, company_id)]


@router.post("/{company_id}/refusals", status_code=201, response_model=list[RefusalOut])
def report_refusals(
    company_id: CompanyId,
    body: RefusalsIn,
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> list[RefusalOut]:
    """Hand the sandbox the signed notices of the company's node's refusals, for the ledger
    (each notice once; one not signed by the company is refused). Policy action:
    `report_refusal`."""
    recorded = node_service.record_refusals(
        gov,
        company_id,
        [(n.payload, n.signature) for n in body.notices],
        via="company",
        actor=me.facts,
    )
    return [RefusalOut.model_validate(r) for r in recorded]


@router.get("/{company_id}/privacy-spend", response_model=SpendOut)
def privacy_spend(
    company_id: CompanyId, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> SpendOut:
    """The privacy budget (epsilon) the company has spent, per job and per purpose, as its own
    signed receipts state. Policy action: `read_company_data`."""
    spends = company_service.company_spend(gov, me.facts, company_id)
    by_purpose: dict[str, float] = {}
    for spend in spends:
        by_purpose[spend.purpose] = by_purpose.get(spend.purpose, 0.0) + spend.epsilon
    return SpendOut(
        company_id=company_id,
        jobs=[JobSpendOut(**vars(s)) for s in spends],
        by_purpose=by_purpose,
        total_epsilon=sum(by_purpose.values()),
    )
