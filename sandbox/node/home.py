"""A company's node folder: what lives on the company's own premises.

    node.json        company id, public key, dataset names
    keys/company.key the company's Ed25519 private key (0600)
    keys/node-auth.key, .pub  the SuperNode's authentication key (ECDSA P-256, OpenSSH; 0600)
    vault/<dataset>/ the company's rows (train/test parquet) and their manifest
    consents.json    the company's own record of the consents it granted and revoked
    privacy/<job>.json the company's own DP accountant state: every training run per job
    models/<job>.local.npz the company's own local-only model of a job (its baseline), kept
                     so that the release assessment can compare both models on the same rows

Only the company's client (and the company's own tooling) reads this folder; the
coordinator never does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandbox import identity
from sandbox.data.vault import Vault
from sandbox.files import write_json_atomic


@dataclass(frozen=True)
class LocalConsent:
    consent_id: str
    dataset: str
    purpose: str
    expires_at: datetime
    revoked_at: datetime | None = None

    def live(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at


@dataclass(frozen=True)
class NodeHome:
    folder: Path

    def local_model_path(self, job_id: str) -> Path:
        return self.folder / "models" / f"{job_id}.local.npz"

    @property
    def key_path(self) -> Path:
        return self.folder / "keys" / "company.key"

    @property
    def node_auth_key_path(self) -> Path:
        """The key this company's Flower SuperNode authenticates with (deployment engine)."""
        return self.folder / "keys" / "node-auth.key"

    @property
    def info_path(self) -> Path:
        return self.folder / "node.json"

    @property
    def consents_path(self) -> Path:
        return self.folder / "consents.json"

    @property
    def local_log_path(self) -> Path:
        return self.folder / "gate-log.jsonl"

    def create(self, company_id: str) -> Ed25519PrivateKey:
        """Set up a new node folder with a fresh key; refuses to reuse one."""
        if self.info_path.exists():
            raise FileExistsError(f"{self.folder} already holds a company node")
        key = identity.generate_key()
        identity.write_private_key(self.key_path, key)
        write_json_atomic(
            self.info_path,
            {"company_id": company_id, "public_key": identity.public_b64(key)},
        )
        write_json_atomic(self.consents_path, [])
        return key

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = json.loads(self.info_path.read_text(encoding="utf-8"))
        return info

    @property
    def company_id(self) -> str:
        return str(self.info()["company_id"])

    def key(self) -> Ed25519PrivateKey:
        return identity.read_private_key(self.key_path)

    def vault(self, dataset: str) -> Vault:
        return Vault.open(self.folder, dataset)

    def consents(self) -> list[LocalConsent]:
        if not self.consents_path.exists():
            return []
        out = []
        for item in json.loads(self.consents_path.read_text(encoding="utf-8")):
            out.append(
                LocalConsent(
                    consent_id=item["consent_id"],
                    dataset=item["dataset"],
                    purpose=item["purpose"],
                    expires_at=datetime.fromisoformat(item["expires_at"]),
                    revoked_at=datetime.fromisoformat(item["revoked_at"])
                    if item.get("revoked_at")
                    else None,
                )
            )
        return out

    def _write_consents(self, consents: list[LocalConsent]) -> None:
        write_json_atomic(
            self.consents_path,
            [
                {
                    "consent_id": c.consent_id,
                    "dataset": c.dataset,
                    "purpose": c.purpose,
                    "expires_at": c.expires_at.isoformat(),
                    "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
                }
                for c in consents
            ],
        )

    def record_grant(self, consent: LocalConsent) -> None:
        consents = [c for c in self.consents() if c.consent_id != consent.consent_id]
        self._write_consents([*consents, consent])

    def record_revocation(self, consent_id: str, when: datetime) -> None:
        consents = self.consents()
        if not any(c.consent_id == consent_id for c in consents):
            raise KeyError(f"this node holds no consent {consent_id}")
        self._write_consents(
            [
                LocalConsent(c.consent_id, c.dataset, c.purpose, c.expires_at, when)
                if c.consent_id == consent_id and c.revoked_at is None
                else c
                for c in consents
            ]
        )
