"""Companies and their datasets: joining, registering a dataset's manifest, the governed
reads of a company's own data (profile, datasets, consents, receipts, privacy spend)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from policies.facts import CompanyFacts, ConsentFacts, DatasetFacts, RegistryFacts
from sandbox import identity
from sandbox.data.manifest import DatasetManifest
from sandbox.data.validation import ValidatedTable
from sandbox.errors import Invalid, NotFound, check_id
from sandbox.governance import Annotation, Governance
from sandbox.ledger import Actor, LedgerRecord, Resource
from sandbox.node.home import NodeHome
from sandbox.node.onboarding import prepare_node, remove_node
from sandbox.node.pins import pin
from sandbox.protocol.receipts import stated_job_epsilon
from sandbox.registry import companies as store
from sandbox.registry import consents as consent_store
from sandbox.registry import jobs as job_store
from sandbox.registry import privacy as privacy_store
from sandbox.registry.models import Company, Consent, Dataset, Receipt
from sandbox.services.base import (
    authorize,
    company_in_question,
    id_available,
    node_update,
    read_registry,
    view,
)
from sandbox.services.consents import consent_record, local_consent
from sandbox.services.warrants import sandbox_public_keys
from sandbox.vocabulary import dataset_id


@dataclass(frozen=True)
class Joined:
    """A company that joined, with its dataset and consents (none without a manifest)."""

    company: Company
    dataset: Dataset | None
    consents: list[Consent]


def _new_dataset_facts(company_id: str, manifest: DatasetManifest) -> DatasetFacts:
    return DatasetFacts(
        id=dataset_id(company_id, manifest.name),
        company=company_id,
        industry=manifest.industry,
        grade=manifest.grade,
        personal_data=manifest.personal_data,
    )


def _decide_enrolment(
    gov: Governance,
    company: CompanyFacts,
    manifest: DatasetManifest | None,
    consents: list[Consent],
) -> None:
    """The decisions of a join: joining (under an id that is free), registering the dataset,
    each consent."""
    authorize(
        gov,
        company,
        "join",
        RegistryFacts(),
        {"id_available": id_available(gov, company.id)},
        annotation=Annotation(resource_kind="company", resource_id=company.id, owner=company.id),
    )
    if manifest is None:
        return
    dataset = _new_dataset_facts(company.id, manifest)
    authorize(
        gov,
        company,
        "register_dataset",
        dataset,
        annotation=Annotation(owner=company.id, grade=manifest.grade),
    )
    for consent in consents:
        authorize(
            gov,
            company,
            "grant_consent",
            ConsentFacts(
                id=consent.id,
                company=company.id,
                dataset=dataset.id,
                purpose=consent.purpose,
                expires_at=consent.expires_at,
            ),
            entities=[dataset],
            annotation=Annotation(
                owner=company.id,
                purpose=consent.purpose,
                consent_id=consent.id,
                resource_kind="consent",
            ),
        )


def _dataset_record(dataset: Dataset) -> LedgerRecord:
    return LedgerRecord(
        action="dataset.registered",
        actor=Actor(principal=dataset.company_id, role="company", organisation=dataset.company_id),
        resource=Resource(
            kind="dataset",
            id=dataset.id,
            owner=dataset.company_id,
            content_hash=dataset.content_hash,
            grade=dataset.grade,  # type: ignore[arg-type]
        ),
        details={"rows": dataset.row_count, "personal_data": dataset.personal_data},
    )


def _joined_records(joined: Joined) -> list[LedgerRecord]:
    company = joined.company
    records = [
        LedgerRecord(
            action="company.joined",
            actor=Actor(principal=company.id, role="company", organisation=company.id),
            resource=Resource(kind="company", id=company.id, owner=company.id),
            details={"public_key_id": identity.key_id(company.public_key)},
        )
    ]
    if joined.dataset is not None:
        records.append(_dataset_record(joined.dataset))
    records += [consent_record("consent.granted", c) for c in joined.consents]
    return records


def _mirror_grant(consent: Consent, node: NodeHome) -> None:
    node.record_grant(local_consent(consent))


def _check_purposes(purposes: tuple[str, ...], manifest: DatasetManifest | None) -> None:
    for purpose in purposes:
        check_id(purpose, "purpose")
    if len(set(purposes)) != len(purposes):
        raise Invalid("a purpose is named twice")
    if purposes and manifest is None:
        raise Invalid("consents cover a dataset: give the dataset's manifest with the purposes")


def check_enrolment(
    company_id: str, industry: str, manifest: DatasetManifest | None, purposes: tuple[str, ...]
) -> None:
    """What a request to join must be, whoever decides on it (Invalid otherwise)."""
    check_id(company_id, "company id")
    _check_purposes(purposes, manifest)
    if manifest is not None:
        store.check_filled(manifest)
        if manifest.industry != industry:
            raise Invalid(
                f"the manifest declares industry {manifest.industry!r}, the company "
                f"{industry!r}; they must agree"
            )


def enrol(
    gov: Governance,
    company_id: str,
    name: str,
    industry: str,
    public_key: str,
    manifest: DatasetManifest | None = None,
    purposes: tuple[str, ...] = (),
    valid_for: timedelta = timedelta(days=365),
    node_dir: Path | None = None,
    consents: list[Consent] | None = None,
) -> Joined:
    """A company joins with its public key and, optionally, the manifest its own node filled in
    (rows never leave the company) and consents over that dataset: each step decided, all or
    nothing. The consents are also written to the company's own node record when its folder
    is on this machine (elsewhere the company's node tooling records them). ``consents``: the
    ones its application proposed (and its node recorded), instead of new ones."""
    check_enrolment(company_id, industry, manifest, purposes)
    if consents is None:
        consents = (
            consent_store.new_consents(company_id, manifest.name, purposes, valid_for)
            if manifest is not None
            else []
        )
    _decide_enrolment(gov, CompanyFacts(id=company_id, industry=industry), manifest, consents)
    row = Company(id=company_id, name=name, industry=industry, public_key=public_key)
    joined = Joined(*store.add_company(gov.engine, row, manifest, consents))
    gov.record_many(_joined_records(joined))
    if manifest is not None:
        for consent in joined.consents:
            node_update(node_dir, partial(_mirror_grant, consent))
    return joined


def join(
    gov: Governance,
    node_dir: Path,
    company_id: str,
    name: str,
    table: ValidatedTable,
    purposes: tuple[str, ...] = (),
    valid_for: timedelta = timedelta(days=365),
    seed: int = 0,
) -> Joined:
    """A company whose node is on this machine joins: its node folder is prepared (key,
    vault; the rows stay there), then it enrols with the filled-in manifest. Each step is
    decided; a refused join leaves no node folder and no registry entry behind."""
    manifest = table.manifest
    _check_purposes(purposes, manifest)
    consents = consent_store.new_consents(company_id, manifest.name, purposes, valid_for)
    _decide_enrolment(
        gov, CompanyFacts(id=company_id, industry=manifest.industry), manifest, consents
    )
    created = not node_dir.exists()
    key, filled = prepare_node(node_dir, company_id, table, seed)
    try:
        node = NodeHome(node_dir)
        # The company's own record first: if the registry then refuses, the folder goes.
        for consent in consents:
            node.record_grant(local_consent(consent))
        row = Company(
            id=company_id,
            name=name,
            industry=manifest.industry,
            public_key=identity.public_b64(key),
        )
        keys = sandbox_public_keys(gov)
        pin(node_dir, keys["operator"], keys["regulator"])
        joined = Joined(*store.add_company(gov.engine, row, filled, consents))
    except BaseException:
        remove_node(node_dir, created)
        raise
    gov.record_many(_joined_records(joined))
    return joined


# ------------------------------------------------------------------------------- datasets
def register_dataset(
    gov: Governance, company_id: str, manifest: DatasetManifest, actor: Any = None
) -> Dataset:
    """Register the manifest of a dataset the company's node has prepared (never its rows)."""
    _, _, actor = company_in_question(gov, company_id, actor)
    store.check_filled(manifest)
    authorize(
        gov,
        actor,
        "register_dataset",
        _new_dataset_facts(company_id, manifest),
        annotation=Annotation(owner=company_id, grade=manifest.grade),
    )
    dataset = store.add_dataset(gov.engine, company_id, manifest)
    gov.record(_dataset_record(dataset))
    return dataset


# ---------------------------------------------------------------------------------- reads
def list_companies(gov: Governance, actor: Any) -> list[Company]:
    read_registry(gov, actor, "companies")
    return store.all_companies(gov.engine)


def company_data(gov: Governance, actor: Any, company_id: str, view_name: str) -> Company:
    """Decide a read of one company's data (profile, datasets, consents, receipts, spend)."""
    company, facts, actor = company_in_question(gov, company_id, actor)
    authorize(
        gov,
        actor,
        "read_company_data",
        facts,
        annotation=view(
            view_name, owner=company_id, resource_kind="company", resource_id=company_id
        ),
    )
    if company is None:
        raise NotFound(f"no company {company_id!r}")
    return company


def company_datasets(gov: Governance, actor: Any, company_id: str) -> list[Dataset]:
    company_data(gov, actor, company_id, "datasets")
    return store.datasets_of(gov.engine, company_id)


def company_consents(gov: Governance, actor: Any, company_id: str) -> list[Consent]:
    company_data(gov, actor, company_id, "consents")
    return consent_store.consents_of(gov.engine, company_id)


def company_receipts(
    gov: Governance, actor: Any, company_id: str, after_id: int = 0, limit: int = 100
) -> list[Receipt]:
    """Every use of the company's data: its signed receipts, in the order they arrived."""
    company_data(gov, actor, company_id, "receipts")
    return job_store.receipts_of(gov.engine, company_id, after_id, limit)


@dataclass(frozen=True)
class JobSpend:
    """What one job cost one company in privacy: what the coordinator charged (write-ahead,
    never below what the company reported) and what the company's own signed receipts state."""

    job_id: str
    purpose: str
    budget: float | None
    epsilon: float
    epsilon_receipted: float
    delta: float | None
    runs: int
    runs_unsettled: int
    receipts: int


def company_spend(gov: Governance, actor: Any, company_id: str) -> list[JobSpend]:
    """The privacy budget the company has spent, per job, oldest job first."""
    company_data(gov, actor, company_id, "privacy_spend")
    charges = privacy_store.company_charges(gov.engine, company_id)
    receipts = job_store.all_receipts_of(gov.engine, company_id)
    job_ids = list(dict.fromkeys([c.job_id for c in charges] + [r.job_id for r in receipts]))
    jobs = job_store.jobs_by_id(gov.engine, job_ids)
    spends = []
    for job_id in job_ids:
        job = jobs[job_id]
        charged = [c for c in charges if c.job_id == job_id]
        signed = [r for r in receipts if r.job_id == job_id]
        dp = (job.spec.get("privacy") or {}).get("dp") or {}
        spends.append(
            JobSpend(
                job_id=job_id,
                purpose=job.purpose,
                budget=dp.get("epsilon"),
                epsilon=max((c.epsilon_job for c in charged), default=0.0),
                epsilon_receipted=stated_job_epsilon(
                    (r.task, r.epsilon, r.payload) for r in signed
                ),
                delta=max((c.delta for c in charged), default=None),
                runs=len(charged),
                runs_unsettled=sum(1 for c in charged if c.status != "reported"),
                receipts=len(signed),
            )
        )
    return spends
