"""The release gate: the assessment of a finished job's model, the decision, the export.

The assessment is computed at each company on its own test split (``assess`` task) and
arrives here as metrics only; ``build_assessment`` sets it beside each company's local-only
baseline and pools the calibration sums. ``release_decision`` is a pure function of the
assessment and the tier's thresholds (the policy set's ``tiers.toml``) as a list of checks
for the report. The decision is the policy engine's (``release_model``, see
``coordinator.governed.PolicyGate``); two seams keep the runner apart from it:

- ``ReleaseGate.decide(job_id, tier, assessment)``: who decides;
- ``ReleaseRecorder.record(outcome)``: where the decision is recorded (the registry's
  ``Release`` table, and under governance the ledger too).

An allowed model is exported to ``runs/<job>/release/`` with its model card (Markdown and
JSON). A denied one stays where training left it (``runs/<job>/model.npz``) and nothing is
exported; the decision with its reasons is recorded either way.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sqlalchemy.engine import Engine

from policies.tiers import TierConfig
from sandbox.jobspec import JobSpec
from sandbox.learning.encoding import FeatureSpec
from sandbox.learning.metrics import CALIBRATION_BINS, ece_from_bins
from sandbox.learning.robustness import (
    PERTURBATIONS,
    RobustnessSettings,
    feature_blocks,
    shift_column_index,
)
from sandbox.privacy.budget import shipped_tiers
from sandbox.protocol import CALIBRATION_PARTS, TrainingPlan
from sandbox.registry import service
from sandbox.registry.models import Dataset, Job, Receipt, Release

_MEASURES = (("auc", "auc"), ("balanced_accuracy", "balanced-accuracy"), ("ece", "ece"))


# ------------------------------------------------------------------ assessment
@dataclass(frozen=True)
class CompanyAssessment:
    """One company's figures: the federated model on its test split, clean and perturbed,
    beside its local-only model. Gaps are local minus federated: positive means the
    company would have done better alone."""

    company: str
    test_rows: int
    test_positives: int
    federated: dict[str, float | None]
    local: dict[str, float | None] | None
    auc_gap: float | None
    balanced_accuracy_gap: float | None
    perturbed: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Assessment:
    companies: list[CompanyAssessment]
    not_assessed: dict[str, str]
    worst_company: str | None
    worst_company_gap: float | None
    worst_balanced_accuracy_gap: float | None
    calibration_error: float | None
    robustness_drop: dict[str, float | None]
    robustness: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def worst_robustness_drop(self) -> tuple[str | None, float | None]:
        defined = {k: v for k, v in self.robustness_drop.items() if v is not None}
        if not defined:
            return None, None
        kind = max(defined, key=defined.__getitem__)
        return kind, defined[kind]


def _gap(local: float | None, federated: float | None) -> float | None:
    return None if local is None or federated is None else local - federated


def _weighted_mean(pairs: Iterable[tuple[float, float | None]]) -> float | None:
    usable = [(w, v) for w, v in pairs if v is not None and w > 0]
    if not usable:
        return None
    total = sum(w for w, _ in usable)
    return sum(w * v for w, v in usable) / total


def build_assessment(
    companies: Sequence[str],
    replies: Mapping[str, Mapping[str, float]],
    baselines: Mapping[str, Mapping[str, float]],
    not_assessed: Mapping[str, str],
    encoding: FeatureSpec,
    robustness: RobustnessSettings,
) -> Assessment:
    """The assessment from the companies' ``assess`` replies and their local baselines."""
    blocks = feature_blocks(encoding)
    column = shift_column_index(encoding, robustness.shift_column)
    shift_feature = encoding.categorical[column] if column is not None else None
    rows: list[CompanyAssessment] = []
    bins = {part: np.zeros(0) for part in CALIBRATION_PARTS}
    for company in companies:
        metrics = replies.get(company)
        if metrics is None:
            continue
        federated = {key: metrics.get(f"clean/{name}") for key, name in _MEASURES}
        federated["loss"] = metrics.get("clean/loss")
        base = baselines.get(company)
        local = {key: base.get(name) for key, name in _MEASURES} if base else None
        perturbed: dict[str, dict[str, Any]] = {}
        for kind in PERTURBATIONS:
            figures: dict[str, Any] = {
                key: metrics.get(f"{kind}/{name}") for key, name in _MEASURES
            }
            if all(v is None for v in figures.values()):
                continue
            figures["auc_drop"] = _gap(federated["auc"], figures["auc"])
            if kind == "missing" and "missing/feature" in metrics:
                figures["feature"] = blocks[int(metrics["missing/feature"])][0]
            if kind == "shift" and "shift/category" in metrics and shift_feature is not None:
                figures["category"] = shift_feature.vocabulary[int(metrics["shift/category"])]
            perturbed[kind] = figures
        for part in CALIBRATION_PARTS:
            values = [metrics.get(f"calibration/{part}/{b}") for b in range(CALIBRATION_BINS)]
            if all(v is not None for v in values):
                vector = np.asarray(values, dtype=np.float64)
                bins[part] = bins[part] + vector if bins[part].size else vector
        rows.append(
            CompanyAssessment(
                company=company,
                test_rows=int(metrics.get("num-examples", 0)),
                test_positives=int(metrics.get("positives", 0)),
                federated=federated,
                local=local,
                auc_gap=_gap(local["auc"] if local else None, federated["auc"]),
                balanced_accuracy_gap=_gap(
                    local["balanced_accuracy"] if local else None, federated["balanced_accuracy"]
                ),
                perturbed=perturbed,
            )
        )
    gaps = {r.company: r.auc_gap for r in rows if r.auc_gap is not None}
    worst = max(gaps, key=gaps.__getitem__) if gaps else None
    ba_gaps = [r.balanced_accuracy_gap for r in rows if r.balanced_accuracy_gap is not None]
    calibration = (
        ece_from_bins(*(bins[part] for part in CALIBRATION_PARTS))
        if all(bins[part].size for part in CALIBRATION_PARTS)
        else None
    )
    missing = dict(not_assessed)
    for company in companies:
        if company not in replies and company not in missing:
            missing[company] = "no assessment received"
    return Assessment(
        companies=rows,
        not_assessed=missing,
        worst_company=worst,
        worst_company_gap=gaps[worst] if worst is not None else None,
        worst_balanced_accuracy_gap=max(ba_gaps) if ba_gaps else None,
        calibration_error=calibration,
        robustness_drop={
            kind: _weighted_mean(
                (r.test_rows, r.perturbed.get(kind, {}).get("auc_drop")) for r in rows
            )
            for kind in PERTURBATIONS
        },
        robustness={
            **robustness.model_dump(mode="json"),
            "shift_column": shift_feature.name if shift_feature is not None else None,
        },
    )


# ------------------------------------------------------------------ thresholds
@dataclass(frozen=True)
class ReleaseThresholds:
    """The numbers a tier's release is held to: the policy set's ``tiers.toml``. The decision
    itself is Cedar's (``release.cedar``); these numbers also lay out the report's checks."""

    tier: str
    max_worst_company_gap: float
    max_calibration_error: float
    max_robustness_drop: float | None = None
    require_every_company: bool = False

    @classmethod
    def of(cls, tier: str, tiers: TierConfig | None = None) -> ReleaseThresholds:
        params = (tiers if tiers is not None else shipped_tiers()).tiers[tier]
        return cls(
            tier=tier,
            max_worst_company_gap=float(params.release_max_worst_company_gap),
            max_calibration_error=float(params.release_max_calibration_error),
            max_robustness_drop=float(params.release_max_robustness_drop),
            require_every_company=params.release_require_every_company,
        )


# --------------------------------------------------------------------- verdict
@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: float | None
    limit: float | None
    reason: str


@dataclass(frozen=True)
class ReleaseVerdict:
    allowed: bool
    tier: str
    reasons: list[str]
    checks: list[Check]
    decided_by: str = "release thresholds"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def release_decision(
    assessment: Assessment, thresholds: ReleaseThresholds, decided_by: str = "release thresholds"
) -> ReleaseVerdict:
    """Allow the release only if every check of the tier passes; a check whose figure
    cannot be measured fails. The reasons name each failed check, or say all passed."""
    tier = thresholds.tier
    checks: list[Check] = []
    if thresholds.require_every_company:
        absent = assessment.not_assessed
        checks.append(
            Check(
                "every_company_assessed",
                not absent,
                float(len(absent)),
                0.0,
                "every company was assessed"
                if not absent
                else f"the {tier} tier needs every company assessed; not assessed: "
                + "; ".join(f"{c} ({r})" for c, r in sorted(absent.items())),
            )
        )
    gap, limit = assessment.worst_company_gap, thresholds.max_worst_company_gap
    worst = next((r for r in assessment.companies if r.company == assessment.worst_company), None)
    if gap is None or worst is None:
        reason = "no company has both a federated and a local-only AUC: the gap cannot be measured"
    elif gap > limit:
        reason = (
            f"worst-company gap {gap:.3f} exceeds the {tier}-tier limit {limit:.3f}: at "
            f"{worst.company} the federated model's AUC is {_fmt(worst.federated['auc'])}, "
            f"its local-only model's {_fmt((worst.local or {}).get('auc'))}"
        )
    else:
        reason = f"worst-company gap {gap:.3f} ({worst.company}) within the {tier}-tier limit {limit:.3f}"
    checks.append(Check("worst_company_gap", gap is not None and gap <= limit, gap, limit, reason))
    ece, limit = assessment.calibration_error, thresholds.max_calibration_error
    checks.append(
        Check(
            "calibration_error",
            ece is not None and ece <= limit,
            ece,
            limit,
            f"calibration error {_fmt(ece)} "
            + ("cannot be measured" if ece is None else "exceeds" if ece > limit else "within")
            + f" the {tier}-tier limit {limit:.3f}",
        )
    )
    if thresholds.max_robustness_drop is not None:
        kind, drop = assessment.worst_robustness_drop
        limit = thresholds.max_robustness_drop
        checks.append(
            Check(
                "robustness_drop",
                drop is not None and drop <= limit,
                drop,
                limit,
                "no perturbed AUC could be measured"
                if drop is None
                else f"mean AUC drop under {kind} {drop:.3f} "
                + ("exceeds" if drop > limit else "within")
                + f" the {tier}-tier limit {limit:.3f}",
            )
        )
    failed = [c.reason for c in checks if not c.passed]
    return ReleaseVerdict(
        allowed=not failed,
        tier=tier,
        reasons=failed or [f"every {tier}-tier release threshold is met"],
        checks=checks,
        decided_by=decided_by,
    )


class ReleaseGate(Protocol):
    """Who decides a release: the policy engine's ``release_model`` (``PolicyGate``)."""

    def decide(self, job_id: str, tier: str, assessment: Assessment) -> ReleaseVerdict: ...


# ------------------------------------------------------------------ model card
def privacy_summary(spec: JobSpec, receipts: Sequence[Receipt]) -> dict[str, Any]:
    """What the job promised and what the companies' signed receipts say was spent.

    Each training receipt states the epsilon of its own run (the increase of the company's
    composed total in the job), so a company's spend in the job is the sum over its runs."""
    spent: dict[str, float] = {}
    for receipt in receipts:
        if receipt.epsilon is not None:
            spent[receipt.company_id] = spent.get(receipt.company_id, 0.0) + receipt.epsilon
    dp = spec.privacy.dp
    if dp is None:
        note = "no differential privacy in this job: no privacy budget was spent or guaranteed"
    elif spent:
        note = "epsilon spent per company: the sum over its runs of what its signed receipts state"
    else:
        note = "differential privacy was requested but no receipt states the epsilon spent"
    return {
        "differential_privacy": dp.model_dump(mode="json") if dp else None,
        "secure_aggregation": spec.privacy.secure_aggregation,
        "max_update_norm": spec.privacy.max_update_norm,
        "epsilon_spent": spent or None,
        "note": note,
    }


def _limits(assessment: Assessment, datasets: Sequence[Dataset], plan: TrainingPlan) -> list[str]:
    limits = []
    sources = sorted({str(d.manifest.get("source") or "") for d in datasets} - {""})
    if sources:
        limits.append("Trained only on: " + "; ".join(sources) + ".")
    few = [
        r.company
        for r in assessment.companies
        if min(r.test_positives, r.test_rows - r.test_positives) < 10
    ]
    if few:
        limits.append(
            f"{len(few)} of {len(assessment.companies)} companies hold fewer than 10 test rows of "
            "one class: their AUC and gap are uncertain by several points."
        )
    undefined = [r.company for r in assessment.companies if r.federated.get("auc") is None]
    if undefined:
        limits.append(f"AUC undefined (one class in the test split) at {', '.join(undefined)}.")
    if assessment.not_assessed:
        limits.append(f"Not assessed: {', '.join(sorted(assessment.not_assessed))}.")
    r = assessment.robustness
    limits.append(
        "Robustness was tested with synthetic perturbations only: Gaussian noise "
        f"(sd {r['noise_std']}) on standardised numeric features, each feature missing in "
        f"turn, and {r['shift_column']} shifted to {r['shift_share']:.0%} of rows per category."
    )
    limits.append(
        f"Decisions use the threshold {plan.threshold:.3f} (the training positive rate); "
        "fairness across demographic groups was not assessed."
    )
    return limits


def model_card(
    *,
    job: Job,
    spec: JobSpec,
    plan: TrainingPlan,
    datasets: Sequence[Dataset],
    model_hash: str,
    rounds_completed: int,
    assessment: Assessment,
    verdict: ReleaseVerdict,
    contributions: Mapping[str, Any] | None,
    privacy: Mapping[str, Any],
) -> dict[str, Any]:
    """The model card's content: purpose, data sources, training, privacy, assessment,
    release decision, contributions and limits."""
    return {
        "model": {
            "job_id": job.id,
            "sha256": model_hash,
            "file": "model.npz",
            "kind": spec.model.kind,
            "input_dim": plan.encoding.input_dim,
            "decision_threshold": plan.threshold,
        },
        "purpose": {"name": spec.purpose, "description": spec.description},
        "data_sources": [
            {
                "company": d.company_id,
                "industry": d.industry,
                "dataset": d.id,
                "grade": d.grade,
                "personal_data": d.personal_data,
                "rows": d.row_count,
                "content_hash": d.content_hash,
            }
            for d in datasets
        ],
        "training": {
            "spec_hash": job.spec_hash,
            "strategy": spec.strategy.name,
            "rounds": rounds_completed,
            "local_epochs": spec.local_epochs,
            "learning_rate": spec.learning_rate,
            "optimizer": spec.optimizer,
            "batch_size": spec.batch_size,
            "weight_decay": spec.weight_decay,
            "seed": spec.seed,
            "features": {
                "numeric": [f.name for f in plan.encoding.numeric],
                "categorical": [f.name for f in plan.encoding.categorical],
            },
        },
        "privacy": dict(privacy),
        "assessment": assessment.to_json(),
        "release": verdict.to_json(),
        "contributions": dict(contributions) if contributions is not None else None,
        "limits": _limits(assessment, datasets, plan),
    }


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_model_card(card: Mapping[str, Any]) -> str:
    """The model card as Markdown."""
    model, purpose, training = card["model"], card["purpose"], card["training"]
    assessment, release, privacy = card["assessment"], card["release"], card["privacy"]
    lines = [
        f"# Model card: {purpose['name']} (job {model['job_id']})",
        "",
        f"- Model: {model['kind']}, {model['input_dim']} inputs, SHA-256 `{model['sha256']}`",
        f"- Purpose: {purpose['description'] or purpose['name']}",
        f"- Release: **{'allowed' if release['allowed'] else 'denied'}** ({release['tier']} tier,"
        f" decided by {release['decided_by']})",
        "",
        "## Data sources",
        "",
        "| company | industry | grade | personal data | rows |",
        "|---|---|---|---|---|",
    ]
    for d in card["data_sources"]:
        lines.append(
            f"| {d['company']} | {d['industry']} | {d['grade']} | "
            f"{'yes' if d['personal_data'] else 'no'} | {d['rows']} |"
        )
    lines += [
        "",
        "## Training",
        "",
        f"{training['strategy']}, {training['rounds']} rounds of {training['local_epochs']} local "
        f"epochs, {training['optimizer']} at learning rate {training['learning_rate']}, batch "
        f"{training['batch_size']}, weight decay {training['weight_decay']}, seed "
        f"{training['seed']}; {len(training['features']['numeric'])} numeric and "
        f"{len(training['features']['categorical'])} categorical features. Job spec hash "
        f"`{training['spec_hash']}`.",
        "",
        "## Privacy",
        "",
        f"Differential privacy: {privacy['differential_privacy'] or 'none'}; secure aggregation:"
        f" {'yes' if privacy['secure_aggregation'] else 'no'}; epsilon spent: "
        f"{privacy['epsilon_spent'] or '–'} ({privacy['note']}).",
        "",
        "## Assessment",
        "",
        "On each company's own held-out test split, computed there; gap = local-only AUC minus "
        "federated AUC.",
        "",
        "| company | test rows (+) | federated AUC | local-only AUC | gap | ECE | AUC noise "
        f"| AUC missing (worst feature) | AUC shift of {assessment['robustness']['shift_column']} "
        "(worst category) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in assessment["companies"]:
        p = r["perturbed"]
        lines.append(
            f"| {r['company']} | {r['test_rows']} ({r['test_positives']}) | "
            f"{_cell(r['federated']['auc'])} | {_cell((r['local'] or {}).get('auc'))} | "
            f"{_cell(r['auc_gap'])} | {_cell(r['federated']['ece'])} | "
            + " | ".join(
                _cell(p.get(k, {}).get("auc"))
                + (f" ({p[k][detail]})" if detail in p.get(k, {}) else "")
                for k, detail in zip(PERTURBATIONS, ("", "feature", "category"), strict=True)
            )
            + " |"
        )
    drops = ", ".join(f"{k} {_cell(v)}" for k, v in assessment["robustness_drop"].items())
    lines += [
        "",
        f"Worst-company gap {_cell(assessment['worst_company_gap'])} "
        f"({assessment['worst_company'] or '–'}); calibration error over all test rows "
        f"{_cell(assessment['calibration_error'])}; mean AUC drop under perturbation: {drops}.",
        "",
        "## Release decision",
        "",
        *(f"- {'pass' if c['passed'] else 'FAIL'}: {c['reason']}" for c in release["checks"]),
        "",
    ]
    contributions = card.get("contributions")
    if contributions and "companies" in contributions:
        lines += [
            "## Contributions",
            "",
            f"{contributions['method']}; utility: {contributions['utility']}.",
            "",
            "| company | leave-one-out | Shapley estimate | share |",
            "|---|---|---|---|",
        ]
        for c in contributions["companies"]:
            share = "–" if c["share"] is None else f"{c['share']:.1%}"
            lines.append(
                f"| {c['company']} | {c['leave_one_out']:+.4f} | {c['shapley']:+.4f} | {share} |"
            )
        lines.append("")
    lines += ["## Limits", "", *(f"- {limit}" for limit in card["limits"]), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- the outcome
@dataclass(frozen=True)
class ReleaseOutcome:
    job_id: str
    model_hash: str
    verdict: ReleaseVerdict
    assessment: Assessment
    contributions: dict[str, Any] | None
    exported_to: Path | None = None
    card: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "allowed": self.verdict.allowed,
            "tier": self.verdict.tier,
            "reasons": self.verdict.reasons,
            "decided_by": self.verdict.decided_by,
            "checks": [asdict(c) for c in self.verdict.checks],
            "model_hash": self.model_hash,
            "exported_to": str(self.exported_to) if self.exported_to else None,
        }


class ReleaseRecorder(Protocol):
    """Where a release decision is recorded. A ledger recorder can take (or share) this place."""

    def record(self, outcome: ReleaseOutcome) -> None: ...


class RegistryRecorder:
    """The default: one row in the registry's ``Release`` table per decision."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def record(self, outcome: ReleaseOutcome) -> None:
        service.record_release(
            self.engine,
            Release(
                job_id=outcome.job_id,
                model_hash=outcome.model_hash,
                tier=outcome.verdict.tier,
                allowed=outcome.verdict.allowed,
                reasons=outcome.verdict.reasons,
                decided_by=outcome.verdict.decided_by,
                assessment=json.loads(json.dumps(outcome.assessment.to_json())),
                contributions=outcome.contributions,
                exported_to=str(outcome.exported_to) if outcome.exported_to else None,
            ),
        )


def release_folder(run_dir: Path) -> Path:
    return run_dir / "release"


def export_release(run_dir: Path, model_file: Path, card: Mapping[str, Any]) -> Path:
    """Copy the model with its card into ``runs/<job>/release/`` in one rename."""
    target = release_folder(run_dir)
    staging = Path(tempfile.mkdtemp(prefix=".release-", dir=run_dir))
    try:
        shutil.copyfile(model_file, staging / "model.npz")
        (staging / "model-card.json").write_text(json.dumps(card, indent=2) + "\n")
        (staging / "model-card.md").write_text(render_model_card(card))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def conclude_release(
    *,
    job: Job,
    spec: JobSpec,
    plan: TrainingPlan,
    datasets: Sequence[Dataset],
    run_dir: Path,
    model_hash: str,
    rounds_completed: int,
    assessment: Assessment,
    verdict: ReleaseVerdict,
    contributions: dict[str, Any] | None,
    privacy: Mapping[str, Any],
    recorder: ReleaseRecorder,
) -> ReleaseOutcome:
    """Write the model card, export the model (``run_dir/model.npz``) with it on allow,
    export nothing on deny, and record the decision either way. The card is also kept in
    the run folder (``release-assessment.json``), exported or not."""
    card = model_card(
        job=job,
        spec=spec,
        plan=plan,
        datasets=datasets,
        model_hash=model_hash,
        rounds_completed=rounds_completed,
        assessment=assessment,
        verdict=verdict,
        contributions=contributions,
        privacy=privacy,
    )
    (run_dir / "release-assessment.json").write_text(json.dumps(card, indent=2) + "\n")
    exported = None
    if verdict.allowed:
        exported = export_release(run_dir, run_dir / "model.npz", card)
    elif release_folder(run_dir).exists():
        # A denied model must not sit in the export folder, even from an earlier decision.
        shutil.rmtree(release_folder(run_dir))
    outcome = ReleaseOutcome(
        job_id=job.id,
        model_hash=model_hash,
        verdict=verdict,
        assessment=assessment,
        contributions=contributions,
        exported_to=exported,
        card=card,
    )
    recorder.record(outcome)
    return outcome
