"""The ledger: an append-only, Merkle-hashed log of records with signed checkpoints.

:class:`Ledger` is its reader (:mod:`sandbox.ledger.reader`), appender
(:mod:`sandbox.ledger.appender`) and prover (:mod:`sandbox.ledger.prover`) over one database.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from sandbox.config import Settings, load_settings
from sandbox.db import get_engine
from sandbox.identity import public_b64, sandbox_key
from sandbox.ledger.checkpoint import check_origin, verifier_key
from sandbox.ledger.entries import (
    Appended,
    ConsistencyProof,
    InclusionProof,
    LedgerEntry,
    StoredEntry,
)
from sandbox.ledger.errors import LedgerError
from sandbox.ledger.group import GroupCommit
from sandbox.ledger.prover import LedgerProver
from sandbox.ledger.reader import MAX_PAGE, EntryQuery
from sandbox.ledger.signer import SignerState
from sandbox.ledger.store import HEAD_ID, LEDGER_TABLES, head_table
from sandbox.utc import utcnow

__all__ = [
    "MAX_PAGE",
    "Appended",
    "ConsistencyProof",
    "EntryQuery",
    "InclusionProof",
    "Ledger",
    "LedgerEntry",
    "StoredEntry",
]


def signer_state_path(keys_dir: Path) -> Path:
    """Where the signer keeps its memory: beside the operator key."""
    return keys_dir / "ledger-signer.json"


class Ledger(LedgerProver):
    """The audit ledger in one database.

    ``Ledger.open()`` takes the database, operator key and origin from the settings.
    """

    def __init__(
        self, engine: Engine, signing_key: Ed25519PrivateKey, origin: str, signer_state: Path
    ) -> None:
        if not isinstance(signing_key, Ed25519PrivateKey):
            raise TypeError("the ledger signs with an Ed25519 private key")
        self.origin = check_origin(origin)
        self._engine = engine
        self._signing_key = signing_key
        self._signer = SignerState(signer_state)
        self._group = GroupCommit(self._commit_prepared)
        self.public_key: Ed25519PublicKey = signing_key.public_key()
        SQLModel.metadata.create_all(engine, tables=list(LEDGER_TABLES))
        self._ensure_head()

    @classmethod
    def open(cls, settings: Settings | None = None) -> Ledger:
        """The ledger of the sandbox: its database, its operator key, its origin."""
        settings = settings or load_settings()
        return cls(
            get_engine(settings.database_url),
            sandbox_key(settings.keys_dir, "operator"),
            settings.ledger_origin,
            signer_state_path(settings.keys_dir),
        )

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def public_key_b64(self) -> str:
        return public_b64(self.public_key)

    @property
    def verifier_key(self) -> str:
        """The public key as a signed-note verifier key (``origin+keyid+base64``)."""
        return verifier_key(self.origin, self.public_key)

    def _ensure_head(self) -> None:
        with self._engine.connect() as conn:
            origin = conn.execute(
                select(head_table.c.origin).where(head_table.c.id == HEAD_ID)
            ).scalar_one_or_none()
            if origin is None:
                try:
                    conn.execute(
                        insert(head_table).values(
                            id=HEAD_ID, origin=self.origin, size=0, updated_at=utcnow()
                        )
                    )
                    conn.commit()
                    return
                except IntegrityError:  # another process created it first: read theirs
                    conn.rollback()
                    origin = conn.execute(
                        select(head_table.c.origin).where(head_table.c.id == HEAD_ID)
                    ).scalar_one()
        if origin != self.origin:
            raise LedgerError(
                f"this database holds the ledger of {origin!r}, not of {self.origin!r}"
            )
