"""The end-to-end demo: real census data, one company per industry, one federated job.

Companies join (each writes its own vault), an engineer files a job, the coordinator runs
it on Flower's simulation engine, and the result is set beside each company's local-only
model and the pooled upper bound (computed here only, and labelled so). The report ends with
what the coordinator concluded: the release assessment, the release decision and each
company's contribution.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.config import Settings
from sandbox.data import census
from sandbox.db import get_engine
from sandbox.governance import get_governance
from sandbox.jobspec import JobSpec
from sandbox.learning.baselines import POOLED_LABEL, pooled_baseline
from sandbox.learning.metrics import mean_defined
from sandbox.operations import approve_job, file_job, join
from sandbox.protocol import TrainingPlan
from sandbox.receipts import ReceiptError, verify_receipt
from sandbox.registry import service

PURPOSE = "income-prediction"
DEMO_ENGINEER = "demo-engineer"
DEMO_REGULATOR = "demo-regulator"


@dataclass(frozen=True)
class DemoOptions:
    rows_per_company: int | None = 500
    industries: int | None = None
    # None: the job spec's defaults (with differential privacy: fewer, larger, clipped steps).
    rounds: int | None = None
    local_epochs: int | None = None
    seed: int = 0
    model: str = "logreg"
    strategy: str = "fedavg"
    governed: bool = True
    proximal_mu: float = 0.01  # used by fedprox only, which refuses to run without one

    @classmethod
    def quick(cls) -> DemoOptions:
        return cls(rows_per_company=300, industries=6, rounds=3)


def reset_home(settings: Settings) -> None:
    """The demo starts from an empty home so that it can be run again and again."""
    if settings.home.exists():
        shutil.rmtree(settings.home)
    settings.home.mkdir(parents=True)


def join_census_companies(
    settings: Settings, options: DemoOptions, step: Callable[[str], None] = lambda _: None
) -> list[str]:
    gov = get_governance(settings)
    industries = census.industries()[: options.industries]
    companies = []
    for industry in industries:
        company_id = census.slug(industry)
        step(f"{industry} joins")
        join(
            gov,
            settings.company_dir(company_id),
            company_id,
            industry,
            census.company_table(industry, rows=options.rows_per_company, seed=options.seed),
            purposes=(PURPOSE,),
            seed=options.seed,
        )
        companies.append(company_id)
    return companies


def demo_spec(
    companies: list[str], options: DemoOptions, settings: Settings | None = None
) -> JobSpec:
    """The demo's job, with the privacy the policy asks of its risk tier: differential
    privacy at the tier's epsilon cap, and secure aggregation for the high tier."""
    privacy: dict[str, object] = {}
    if options.governed and settings is not None:
        gov = get_governance(settings)
        engine = get_engine(settings.database_url)
        datasets = [service.get_dataset(engine, c, "census") for c in companies]
        tier = gov.job_tier(datasets)
        cap = float(gov.tiers.tiers[tier].dp_epsilon_cap)
        privacy = {"secure_aggregation": tier == "high", "dp": {"epsilon": cap}}
    training = {"rounds": options.rounds, "local_epochs": options.local_epochs}
    return JobSpec.model_validate(
        {
            "purpose": PURPOSE,
            "companies": companies,
            "dataset": "census",
            "model": {"kind": options.model},
            "strategy": {"name": options.strategy}
            | ({"proximal_mu": options.proximal_mu} if options.strategy == "fedprox" else {}),
            "privacy": privacy,
            **{k: v for k, v in training.items() if v is not None},
            "seed": options.seed,
            "min_participants": min(3, len(companies)),
            "description": "Predict whether a worker's income exceeds $50,000 (CPS 1994-95).",
        }
    )


@dataclass(frozen=True)
class FiledDemoJob:
    job_id: str
    spec_hash: str
    tier: str
    steps: list[str]


def file_demo_job(settings: Settings, spec: JobSpec, options: DemoOptions) -> FiledDemoJob:
    """File the demo's job as its engineer; when the policy asks for a regulator's approval,
    the demo plays the regulator. Ungoverned runs (benchmarks of the learning engine only)
    file the job directly."""
    engine = get_engine(settings.database_url)
    if not options.governed:
        job = service.file_job(engine, spec, filed_by=DEMO_ENGINEER)
        service.set_job_status(engine, job.id, "admitted", reason="filed without governance")
        return FiledDemoJob(job.id, job.spec_hash, "ungoverned", ["filed without governance"])
    gov = get_governance(settings)
    filed = file_job(gov, spec, engineer=DEMO_ENGINEER)
    steps = [f"admission: {'allowed' if filed.allowed else 'denied'} ({' '.join(filed.reasons)})"]
    if not filed.allowed:
        raise RuntimeError(f"the demo job was not admitted: {' '.join(filed.reasons)}")
    if filed.job.status == "awaiting_approval":
        approve_job(
            gov, DEMO_REGULATOR, filed.job.id, "demo: approved after review of the filed spec"
        )
        steps.append(
            f"risk tier {filed.job.risk_tier}: approved by {DEMO_REGULATOR} (the demo plays the regulator)"
        )
    return FiledDemoJob(filed.job.id, filed.job.spec_hash, filed.job.risk_tier, steps)


def _figures(metrics: dict[str, Any] | None) -> dict[str, float | None]:
    metrics = metrics or {}
    return {"auc": metrics.get("auc"), "balanced_accuracy": metrics.get("balanced-accuracy")}


def build_report(settings: Settings, job_id: str, options: DemoOptions) -> dict[str, Any]:
    """The per-company table (local-only, federated, pooled) and its summary."""
    engine = get_engine(settings.database_url)
    job = service.get_job(engine, job_id)
    result = job.result or {}
    state = json.loads((settings.runs_dir / job_id / "state.json").read_text())
    state_plan = TrainingPlan.model_validate(state["plan"])
    spec = service.job_spec(job)
    pooled = pooled_baseline({c: settings.company_dir(c) for c in spec.companies}, state_plan)
    rows = []
    for company_id in spec.companies:
        dataset = service.get_dataset(engine, company_id, spec.dataset)
        figures = result.get("companies", {}).get(company_id, {})
        federated = figures.get("federated") or {}
        rows.append(
            {
                "company": company_id,
                "industry": dataset.industry,
                "rows": dataset.row_count,
                "test_rows": int(federated.get("num-examples", pooled[company_id].num_examples)),
                "test_positives": int(federated.get("positives", pooled[company_id].positives)),
                "local": _figures(figures.get("local")),
                "federated": _figures(federated),
                "pooled": {
                    "auc": pooled[company_id].auc,
                    "balanced_accuracy": pooled[company_id].balanced_accuracy,
                },
            }
        )
    return {
        "job": {
            "id": job_id,
            "status": job.status,
            "reason": job.status_reason,
            "spec_hash": job.spec_hash,
            "model_hash": job.model_hash,
            "rounds": job.rounds_completed,
        },
        "settings": {
            "rows_per_company": options.rows_per_company,
            "companies": len(rows),
            "rounds": spec.rounds,
            "local_epochs": spec.local_epochs,
            "learning_rate": spec.learning_rate,
            "batch_size": spec.batch_size,
            "privacy": spec.privacy.model_dump(mode="json"),
            "seed": options.seed,
            "model": options.model,
            "strategy": options.strategy,
            "engine": "flower-simulation",
        },
        "labels": {"pooled": POOLED_LABEL},
        "companies": rows,
        "summary": summarise(rows),
        "assessment": result.get("assessment"),
        "release": release_summary(engine, job_id, result),
        "contributions": result.get("contributions"),
        "ledger": ledger_summary(settings, job_id) if options.governed else None,
    }


def ledger_summary(settings: Settings, job_id: str) -> dict[str, Any]:
    """What the ledger holds about the job, checked as a regulator would: the whole log
    recomputed against its signed checkpoints, and every receipt the coordinator stored
    verified again against its company's registered public key."""
    gov = get_governance(settings)
    engine = get_engine(settings.database_url)
    actions: dict[str, int] = {}
    for entry in gov.ledger.iter_entries():
        if entry.record.job_id == job_id:
            actions[entry.record.action] = actions.get(entry.record.action, 0) + 1
    keys = {c.id: c.public_key for c in service.list_companies(engine)}
    receipts = service.job_receipts(engine, job_id)
    refused = []
    for receipt in receipts:
        try:
            verify_receipt(
                receipt.payload,
                receipt.signature,
                keys[receipt.company_id],
                company=receipt.company_id,
                job=job_id,
                round=receipt.round,
                task=receipt.task,
            )
        except (ReceiptError, KeyError) as exc:
            refused.append(f"{receipt.company_id} round {receipt.round}: {exc}")
    report = gov.ledger.verify()
    return {
        "size": report.size,
        "verifies": report.ok,
        "problems": report.problems,
        "checkpoints": report.checkpoints,
        "job_entries": actions,
        "receipts": len(receipts),
        "receipts_refused": refused,
    }


def release_summary(engine: Any, job_id: str, result: dict[str, Any]) -> dict[str, Any] | None:
    """The job's release decision, and whether the registry holds its record."""
    if not result.get("release"):
        return None
    release = dict(result["release"])
    release["recorded"] = any(
        r.model_hash == release["model_hash"] and r.allowed == release["allowed"]
        for r in service.job_releases(engine, job_id)
    )
    return release


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(kind: str, metric: str) -> float | None:
        return mean_defined([r[kind][metric] for r in rows])

    comparable = [
        r for r in rows if r["local"]["auc"] is not None and r["federated"]["auc"] is not None
    ]
    beats = [r["company"] for r in comparable if r["federated"]["auc"] > r["local"]["auc"]]
    federated = mean("federated", "auc")
    pooled = mean("pooled", "auc")
    return {
        "mean_auc": {"local": mean("local", "auc"), "federated": federated, "pooled": pooled},
        "mean_balanced_accuracy": {
            "local": mean("local", "balanced_accuracy"),
            "federated": mean("federated", "balanced_accuracy"),
            "pooled": mean("pooled", "balanced_accuracy"),
        },
        "federated_minus_pooled_auc": (federated - pooled)
        if federated is not None and pooled is not None
        else None,
        "federated_beats_local": len(beats),
        "comparable_companies": len(comparable),
        "undefined_auc": [r["company"] for r in rows if r["federated"]["auc"] is None],
    }


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
