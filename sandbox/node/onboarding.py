"""The company-side step of joining, on the company's own machine: a new node folder with a
new key, the rows split into the vault, and the manifest filled in (row counts, content hash).
Only the manifest and the public key are ever sent to the sandbox. If anything fails, the
node folder is left as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandbox.data.manifest import DatasetManifest
from sandbox.data.validation import ValidatedTable
from sandbox.data.vault import write_vault
from sandbox.errors import Conflict, check_id
from sandbox.node.home import NodeHome


def prepare_node(
    node_dir: Path, company_id: str, table: ValidatedTable, seed: int = 0
) -> tuple[Ed25519PrivateKey, DatasetManifest]:
    """Make the node folder: key, vault, filled-in manifest."""
    check_id(company_id, "company id")
    node = NodeHome(node_dir)
    if node.info_path.exists():
        raise Conflict(f"{node_dir} already holds a company node")
    created = not node_dir.exists()
    try:
        key = node.create(company_id)
        return key, write_vault(
            node_dir, table.frame, table.manifest, seed, table.test_rows, table.split_source
        )
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
