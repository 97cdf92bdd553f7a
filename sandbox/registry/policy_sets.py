"""An installation's own record of its policy sets: the active set (files and the
regulator's signature) and signatures filed for sets not yet active.

Bootstrap. Regulator keys are made per installation on first use, so no signature can ship
with the repository. Instead, on an installation's first start (no active set stored yet), the
installation's own regulator key signs the shipped set; that first activation is recorded with
``bootstrap = true``. The signed set is copied into this store, and from then on the stored
copy is what starts: each start re-verifies its signature. A shipped set that differs from the
stored one (an upgrade, or a tampered file) becomes active only if the regulator has signed
its hash (``sandbox policy sign``, which files the signature here); otherwise the failed
activation is recorded and the stored set stays active. Trust on first use is the price of
per-installation keys; the bootstrap record in the ledger makes it visible to the regulator.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from policies.activation import signing_message
from policies.policyset import DEFAULT_POLICY_DIR, hash_files, policy_files
from sandbox.files import write_atomic
from sandbox.identity import sign
from sandbox.utc import rfc3339, utcnow


def sign_hash(key: Ed25519PrivateKey, policy_set_hash: str) -> str:
    """A regulator's signature (base64) over a policy-set hash."""
    return sign(key, signing_message(policy_set_hash))


def sign_policy_set(key: Ed25519PrivateKey, policy_dir: Path = DEFAULT_POLICY_DIR) -> str:
    """A regulator's signature (base64) over the policy set in ``policy_dir``."""
    return sign_hash(key, hash_files(policy_files(policy_dir)))


class PolicyStore:
    """An installation's own record of its policy sets, in one folder (``<home>/policy``):

    - ``active/``: a copy of the files of the active set, and ``active.json`` with its hash
      and the regulator's signature;
    - ``signatures/<hash>.sig``: regulator signatures filed for sets not yet active.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def active_dir(self) -> Path:
        return self.root / "active"

    def load_active(self) -> tuple[dict[str, bytes], str] | None:
        """The stored active set's files and signature, or ``None`` before bootstrap."""
        meta_path = self.root / "active.json"
        if not meta_path.exists():
            return None
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        files = {p.name: p.read_bytes() for p in sorted(self.active_dir.iterdir()) if p.is_file()}
        return files, str(meta.get("signature", ""))

    def save_active(self, files: Mapping[str, bytes], signature: str) -> None:
        """Replace the stored active set. The new copy is written beside the old one and
        swapped in, and ``active.json`` is replaced last, so a crash leaves the old set or the
        new one, never a mix that would fail its signature."""
        staging = self.root / "active.new"
        _clear(staging)
        staging.mkdir(parents=True)
        for name, data in files.items():
            (staging / name).write_bytes(data)
        old = self.root / "active.old"
        _clear(old)
        if self.active_dir.exists():
            self.active_dir.rename(old)
        staging.rename(self.active_dir)
        _clear(old)
        meta = {"hash": hash_files(files), "signature": signature, "saved_at": rfc3339(utcnow())}
        write_atomic(self.root / "active.json", (json.dumps(meta, indent=2) + "\n").encode())

    def file_signature(self, policy_set_hash: str, signature: str) -> Path:
        """File a regulator's signature for a set, to be used when that set is activated."""
        folder = self.root / "signatures"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{policy_set_hash}.sig"
        write_atomic(path, (signature + "\n").encode("ascii"))  # read by processes starting at once
        return path

    def signature_for(self, policy_set_hash: str) -> str | None:
        path = self.root / "signatures" / f"{policy_set_hash}.sig"
        return path.read_text(encoding="ascii").strip() if path.exists() else None


def _clear(path: Path) -> None:
    if not path.exists():
        return
    for child in path.iterdir():
        child.unlink()
    path.rmdir()
