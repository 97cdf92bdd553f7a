"""The audit ledger: an RFC 6962 Merkle log of records, with signed C2SP checkpoints.

Write with :class:`Ledger` (``Ledger.open()`` uses the sandbox settings); verify with
nothing but a public key through :func:`verify_checkpoint`, :func:`verify_inclusion`,
:func:`verify_consistency` and :func:`verify_bundle`.
"""

from sandbox.ledger.bundle import verify_bundle
from sandbox.ledger.checkpoint import (
    Checkpoint,
    SignedCheckpoint,
    load_public_key,
    verify_checkpoint,
)
from sandbox.ledger.errors import (
    BundleError,
    CheckpointError,
    EntryNotFound,
    LedgerError,
    LedgerIntegrityError,
    LedgerWriteError,
    RecordError,
)
from sandbox.ledger.log import (
    Appended,
    ConsistencyProof,
    InclusionProof,
    Ledger,
    LedgerEntry,
    StoredEntry,
    signer_state_path,
)
from sandbox.ledger.merkle import leaf_hash, verify_consistency, verify_inclusion
from sandbox.ledger.records import (
    Actor,
    DecisionRef,
    LedgerRecord,
    Privacy,
    Purpose,
    Resource,
    canonical_entry,
    parse_record,
)
from sandbox.ledger.verify import VerificationReport

__all__ = [
    "Actor",
    "Appended",
    "BundleError",
    "Checkpoint",
    "CheckpointError",
    "ConsistencyProof",
    "DecisionRef",
    "EntryNotFound",
    "InclusionProof",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "LedgerIntegrityError",
    "LedgerRecord",
    "LedgerWriteError",
    "Privacy",
    "Purpose",
    "RecordError",
    "Resource",
    "SignedCheckpoint",
    "StoredEntry",
    "VerificationReport",
    "canonical_entry",
    "leaf_hash",
    "load_public_key",
    "parse_record",
    "signer_state_path",
    "verify_bundle",
    "verify_checkpoint",
    "verify_consistency",
    "verify_inclusion",
]
