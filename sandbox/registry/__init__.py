"""Companies, node keys, datasets, consents, jobs, rounds, receipts, principals and API
tokens: tables and service functions."""

from sandbox.registry.models import (
    ApiToken,
    Company,
    Consent,
    Dataset,
    Job,
    NodeKey,
    PolicyDecision,
    Principal,
    PrivacySpend,
    Receipt,
    Round,
)

__all__ = [
    "ApiToken",
    "Company",
    "Consent",
    "Dataset",
    "Job",
    "NodeKey",
    "PolicyDecision",
    "Principal",
    "PrivacySpend",
    "Receipt",
    "Round",
]
