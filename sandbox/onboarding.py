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

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Engine

from sandbox import identity
from sandbox.data.manifest import DatasetManifest, check_identifier
from sandbox.data.validation import ValidatedTable
from sandbox.data.vault import write_vault
from sandbox.node import LocalConsent, NodeHome
from sandbox.registry.errors import Conflict
from sandbox.registry.models import Company, Consent, Dataset
from sandbox.registry.service import as_utc, enrol_company, new_grants


@dataclass(frozen=True)
class Onboarded:
    company: Company
    dataset: Dataset
    consents: list[Consent]
    node_dir: Path


def prepare_node(
    node_dir: Path, company_id: str, table: ValidatedTable, seed: int = 0
) -> tuple[Ed25519PrivateKey, DatasetManifest]:
    """The company-side step of joining, on the company's own machine: a new node folder with
    a new key, the rows split into the vault, and the manifest filled in (row counts, content
    hash). Only the manifest and the public key are ever sent to the sandbox."""
    check_identifier(company_id, "company id")
    node = NodeHome(node_dir)
    if node.info_path.exists():
        raise Conflict(f"{node_dir} already holds a company node")
    created = not node_dir.exists()
    try:
        key = node.create(company_id)
        return key, write_vault(node_dir, table.frame, table.manifest, seed=seed)
    except BaseException:
        remove_node(node_dir, created)
        raise


def remove_node(node_dir: Path, created: bool) -> None:
    """Undo a node folder's preparation: the folder if this step created it, else the files
    it wrote."""
    if created:
        shutil.rmtree(node_dir, ignore_errors=True)
        return
    for leftover in ("node.json", "consents.json", "keys", "vault"):
        path = node_dir / leftover
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


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
        key, filled = prepare_node(node_dir, company_id, table, seed)
        company = Company(
            id=company_id,
            name=name,
            industry=manifest.industry,
            public_key=identity.public_b64(key),
        )
        grants = new_grants(company_id, manifest.name, purposes, valid_for)
        # The company's own record first: if the registry then refuses, the folder goes.
        for grant in grants:
            node.record_grant(
                LocalConsent(grant.id, manifest.name, grant.purpose, as_utc(grant.expires_at))
            )
        company, dataset, consents = enrol_company(engine, company, filled, grants)
    except BaseException:
        remove_node(node_dir, created)
        raise
    return Onboarded(company=company, dataset=dataset, consents=consents, node_dir=node_dir)
