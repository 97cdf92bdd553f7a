"""A company joins the sandbox: its node folder, its key, its vault, its registry entry.

This is the company-side step (it reads the company's rows) followed by the registry step
(only the manifest and the public key cross). If anything fails, nothing is left behind:
the node folder is removed and the database transaction rolls back.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import Engine

from sandbox import identity
from sandbox.data.manifest import check_identifier
from sandbox.data.validation import ValidatedTable
from sandbox.data.vault import write_vault
from sandbox.node import LocalConsent, NodeHome
from sandbox.registry.errors import Conflict
from sandbox.registry.models import Company, Consent, Dataset, utcnow
from sandbox.registry.service import as_utc, dataset_id, enrol_company, new_id


@dataclass(frozen=True)
class Onboarded:
    company: Company
    dataset: Dataset
    consents: list[Consent]
    node_dir: Path


def onboard_company(
    engine: Engine,
    node_dir: Path,
    company_id: str,
    name: str,
    table: ValidatedTable,
    purposes: tuple[str, ...] = (),
    valid_for: timedelta = timedelta(days=365),
    seed: int = 0,
) -> Onboarded:
    check_identifier(company_id, "company id")
    manifest = table.manifest
    node = NodeHome(node_dir)
    if node.info_path.exists():
        raise Conflict(f"{node_dir} already holds a company node")
    created = not node_dir.exists()
    try:
        key = node.create(company_id)
        filled = write_vault(node_dir, table.frame, manifest, seed=seed)
        company = Company(
            id=company_id,
            name=name,
            industry=manifest.industry,
            public_key=identity.public_b64(key),
        )
        now = utcnow()
        grants = [
            Consent(
                id=new_id("consent"),
                company_id=company_id,
                dataset_id=dataset_id(company_id, manifest.name),
                purpose=purpose,
                granted_at=now,
                expires_at=now + valid_for,
            )
            for purpose in purposes
        ]
        # The company's own record first: if the registry then refuses, the folder goes.
        for grant in grants:
            node.record_grant(
                LocalConsent(grant.id, manifest.name, grant.purpose, as_utc(grant.expires_at))
            )
        company, dataset, consents = enrol_company(engine, company, filled, grants)
    except BaseException:
        if created:
            shutil.rmtree(node_dir, ignore_errors=True)
        else:
            for leftover in ("node.json", "consents.json", "keys", "vault"):
                path = node_dir / leftover
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        raise
    return Onboarded(company=company, dataset=dataset, consents=consents, node_dir=node_dir)
