"""The bare arm of the benchmarks: a job filed without a decision, to be run without
governance (no decisions, gates, receipts or ledger), so that the learning engine alone, or
what governance costs, can be measured side by side with the product.

Nothing of the product reaches this module: the import contracts forbid the CLI, the API,
the console and the composition code to import it (see ``pyproject.toml``); only
``benchmarks/`` and the tests do.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from sandbox.privacy.budget import shipped_tiers
from sandbox.protocol.bundle import running_bundle
from sandbox.protocol.jobspec import JobSpec
from sandbox.registry import companies as company_store
from sandbox.registry import jobs as store
from sandbox.registry.models import Job
from sandbox.vocabulary import JobStatus, new_id


def file_unreviewed(engine: Engine, spec: JobSpec, filed_by: str) -> Job:
    """Store ``spec`` as an admitted job with no admission decision and no ledger entry; its
    risk tier is the shipped policy set's for its companies' datasets."""
    datasets = company_store.datasets_named(engine, list(spec.companies), spec.dataset)
    tier = shipped_tiers().risk_tier(
        [d.industry for d in datasets.values()], [d.grade for d in datasets.values()]
    )
    return store.insert_job(
        engine,
        Job(
            id=new_id("job"),
            purpose=spec.purpose,
            spec=spec.model_dump(mode="json"),
            spec_hash=spec.spec_hash,
            bundle_hash=running_bundle().digest,
            filed_by=filed_by,
            status=JobStatus.ADMITTED,
            status_reason="filed without governance (benchmark)",
            risk_tier=tier,
        ),
    )
