"""The end-to-end demo: real census data, one company per industry, one federated job.

Companies join (each writes its own vault), an engineer files a job, a regulator approves it
where the policy asks, the engineer starts it on Flower's simulation engine: every step
through the sandbox's services, decided and recorded like any other. The result is set
beside each company's local-only model and the pooled upper bound (computed here only, and
labelled so). The report ends with what the coordinator concluded (the release assessment,
the release decision, each company's contribution) and the regulator's check of the ledger.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sandbox.config import Settings
from sandbox.data import census
from sandbox.governance import Governance, get_governance
from sandbox.learning.baselines import POOLED_LABEL, pooled_baseline
from sandbox.learning.metrics import mean_defined
from sandbox.ledger.witness import WitnessKey, witnessed_by
from sandbox.protocol.jobspec import JobSpec
from sandbox.protocol.messages import TrainingPlan
from sandbox.protocol.receipts import ReceiptError, verify_receipt
from sandbox.runtime.simulation import run_on_simulation
from sandbox.services import audit, companies, jobs, principals, settlements
from sandbox.vocabulary import INSTALLATION_REGULATOR

PURPOSE = "income-prediction"
DEMO_ENGINEER = "demo-engineer"
DEMO_VALUE = Decimal("10000")
"""The value the demo's engineer declares for the job's model, to share out (EUR)."""
DEMO_VOUCHER = Decimal("0.50")
"""The compute voucher the operator issues each company as it joins (EUR)."""
DEMO_REGULATOR = INSTALLATION_REGULATOR


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
) -> list[companies.Joined]:
    """One company per industry joins, each with a sample of its industry's rows."""
    gov = get_governance(settings)
    joined = []
    for industry in census.industries()[: options.industries]:
        company_id = census.slug(industry)
        step(f"{industry} joins")
        joined.append(
            companies.join(
                gov,
                settings.company_dir(company_id),
                company_id,
                industry,
                census.company_table(industry, rows=options.rows_per_company, seed=options.seed),
                purposes=(PURPOSE,),
                seed=options.seed,
            )
        )
    return joined


def demo_spec(
    joined: list[companies.Joined], options: DemoOptions, gov: Governance | None = None
) -> JobSpec:
    """The demo's job over the companies that joined, with the privacy the policy asks of
    its risk tier: differential privacy at the tier's epsilon cap, and secure aggregation
    for the high tier. Without ``gov`` (the benchmarks' bare arm) the job asks for no
    privacy at all."""
    privacy: dict[str, object] = {}
    if gov is not None:
        tier = gov.job_tier([j.dataset for j in joined if j.dataset is not None])
        cap = float(gov.tiers.tiers[tier].dp_epsilon_cap)
        privacy = {"secure_aggregation": tier == "high", "dp": {"epsilon": cap}}
    training = {"rounds": options.rounds, "local_epochs": options.local_epochs}
    ids = [j.company.id for j in joined]
    return JobSpec.model_validate(
        {
            "purpose": PURPOSE,
            "companies": ids,
            "dataset": "census",
            "model": {"kind": options.model},
            "strategy": {"name": options.strategy}
            | ({"proximal_mu": options.proximal_mu} if options.strategy == "fedprox" else {}),
            "privacy": privacy,
            **{k: v for k, v in training.items() if v is not None},
            "seed": options.seed,
            "min_participants": min(3, len(ids)),
            "description": "Predict whether a worker's income exceeds $50,000 (CPS 1994-95).",
        }
    )


@dataclass(frozen=True)
class FiledDemoJob:
    job_id: str
    spec_hash: str
    tier: str
    steps: list[str]


def file_demo_job(settings: Settings, spec: JobSpec) -> FiledDemoJob:
    """File the demo's job as its engineer; when the policy asks for a regulator's approval,
    the demo plays the regulator."""
    gov = get_governance(settings)
    engineer = principals.acting_as(gov, "engineer", DEMO_ENGINEER)
    filed = jobs.file_job(gov, spec, engineer)
    steps = [f"admission: {'allowed' if filed.allowed else 'denied'} ({' '.join(filed.reasons)})"]
    if not filed.allowed:
        raise RuntimeError(f"the demo job was not admitted: {' '.join(filed.reasons)}")
    if filed.approval_by:
        jobs.approve_as_installation_regulator(
            gov, filed.job.id, "demo: approved after review of the filed spec"
        )
        steps.append(
            f"risk tier {filed.job.risk_tier}: approval asked by {', '.join(filed.approval_by)};"
            f" approved by {DEMO_REGULATOR} (the demo plays the regulator)"
        )
    return FiledDemoJob(filed.job.id, filed.job.spec_hash, filed.job.risk_tier, steps)


def issue_demo_vouchers(settings: Settings, members: list[companies.Joined]) -> int:
    """The operator issues each company that joined a compute voucher, as the written terms
    allow (small firms, or first-time participants: every company of the demo is both); how
    many were issued."""
    gov = get_governance(settings)
    operator = principals.operator(gov)
    for joined in members:
        settlements.issue_voucher(gov, operator, joined.company.id, DEMO_VOUCHER, 365,
                                  "a small firm's first job in the sandbox")  # fmt: skip
    return len(members)


def settle_demo_job(settings: Settings, job_id: str) -> dict[str, Any]:
    """The demo's engineer declares the model's value and settles the job: the statement,
    as the engineer reads it."""
    gov = get_governance(settings)
    engineer = principals.acting_as(gov, "engineer", DEMO_ENGINEER)
    settlements.settle(gov, engineer, job_id, DEMO_VALUE)
    shown = settlements.settlement_of(gov, engineer, job_id)
    return {**shown.statement, "statement_sha256": shown.statement_sha256}


def run_demo_job(settings: Settings, job_id: str, progress: Any = None) -> dict[str, Any]:
    """The demo's engineer starts the job on the simulation engine."""
    gov = get_governance(settings)
    engineer = principals.acting_as(gov, "engineer", DEMO_ENGINEER)
    return run_on_simulation(settings, job_id, actor=engineer, progress=progress)


def _figures(metrics: dict[str, Any] | None) -> dict[str, float | None]:
    metrics = metrics or {}
    return {"auc": metrics.get("auc"), "balanced_accuracy": metrics.get("balanced-accuracy")}


def build_report(settings: Settings, job_id: str, options: DemoOptions) -> dict[str, Any]:
    """The per-company table (local-only, federated, pooled) and its summary, as the demo's
    engineer reads the job, and the regulator's check of the ledger."""
    gov = get_governance(settings)
    engineer = principals.acting_as(gov, "engineer", DEMO_ENGINEER)
    overview = jobs.job_overview(gov, engineer, job_id)
    job = overview.job
    result = job.result or {}
    state = json.loads((settings.runs_dir / job_id / "state.json").read_text())
    state_plan = TrainingPlan.model_validate(state["plan"])
    spec = JobSpec.model_validate(job.spec)
    pooled = pooled_baseline({c: settings.company_dir(c) for c in spec.companies}, state_plan)
    datasets = {d.company_id: d for d in jobs.job_datasets(gov, engineer, job_id)}
    rows = []
    for company_id in spec.companies:
        dataset = datasets[company_id]
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
    release = None
    if result.get("release"):
        release = dict(result["release"])
        release["recorded"] = any(
            r.model_hash == release["model_hash"] and r.allowed == release["allowed"]
            for r in overview.releases
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
        "release": release,
        "contributions": result.get("contributions"),
        "ledger": ledger_summary(gov, job_id),
    }


def ledger_summary(gov: Governance, job_id: str) -> dict[str, Any]:
    """What the ledger holds about the job, checked as a regulator would: the whole log
    recomputed against its signed checkpoints, and every receipt of the job verified again
    against its company's registered public key."""
    regulator = principals.acting_as(gov, "regulator", DEMO_REGULATOR)
    actions: dict[str, int] = {}
    for entry in audit.job_entries(gov, regulator, job_id):
        if entry.record is not None:
            actions[entry.record.action] = actions.get(entry.record.action, 0) + 1
    keys = {c.id: c.public_key for c in companies.list_companies(gov, regulator)}
    receipts = audit.job_receipts(gov, regulator, job_id)
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
    report = audit.audit_verify(gov, regulator)
    witnesses = [WitnessKey(company, key) for company, key in keys.items()]
    cosigned = [len(witnessed_by(cp.note, witnesses)) for cp in gov.ledger.checkpoints()]
    return {
        "cosignatures_per_checkpoint": cosigned,
        "size": report.size,
        "verifies": report.ok,
        "problems": report.problems,
        "checkpoints": report.checkpoints,
        "job_entries": actions,
        "receipts": len(receipts),
        "receipts_refused": refused,
    }


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
