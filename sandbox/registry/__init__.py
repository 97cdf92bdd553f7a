"""Companies, node keys, datasets, consents, jobs, rounds and receipts: tables and service
functions."""

from sandbox.registry.models import (
    Company,
    Consent,
    Dataset,
    Job,
    NodeKey,
    PolicyDecision,
    PrivacySpend,
    Receipt,
    Round,
)

__all__ = [
    "Company",
    "Consent",
    "Dataset",
    "Job",
    "NodeKey",
    "PolicyDecision",
    "PrivacySpend",
    "Receipt",
    "Round",
]
