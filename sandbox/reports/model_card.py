"""The model card of a job's model: purpose, data sources, training, privacy, assessment,
release decision, contributions and limits, as JSON-ready content and as Markdown."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sandbox.learning.robustness import PERTURBATIONS
from sandbox.protocol.jobspec import JobSpec
from sandbox.protocol.messages import TrainingPlan
from sandbox.registry.models import Dataset, Job, Receipt


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


def _limits(
    assessment: Mapping[str, Any], datasets: Sequence[Dataset], plan: TrainingPlan
) -> list[str]:
    limits = []
    sources = sorted({str(d.manifest.get("source") or "") for d in datasets} - {""})
    if sources:
        limits.append("Trained only on: " + "; ".join(sources) + ".")
    rows = assessment["companies"]
    few = [
        r["company"]
        for r in rows
        if min(r["test_positives"], r["test_rows"] - r["test_positives"]) < 10
    ]
    if few:
        limits.append(
            f"{len(few)} of {len(rows)} companies hold fewer than 10 test rows of "
            "one class: their AUC and gap are uncertain by several points."
        )
    undefined = [r["company"] for r in rows if r["federated"].get("auc") is None]
    if undefined:
        limits.append(f"AUC undefined (one class in the test split) at {', '.join(undefined)}.")
    if assessment["not_assessed"]:
        limits.append(f"Not assessed: {', '.join(sorted(assessment['not_assessed']))}.")
    r = assessment["robustness"]
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
    assessment: Mapping[str, Any],
    verdict: Mapping[str, Any],
    contributions: Mapping[str, Any] | None,
    privacy: Mapping[str, Any],
) -> dict[str, Any]:
    """The model card's content: purpose, data sources, training, privacy, assessment,
    release decision, contributions and limits (``assessment`` and ``verdict`` as JSON)."""
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
        "assessment": dict(assessment),
        "release": dict(verdict),
        "contributions": dict(contributions) if contributions is not None else None,
        "limits": _limits(assessment, datasets, plan),
    }


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


_OUTCOME = {
    "allow": "allowed",
    "deny": "denied",
    "insufficient-evidence": "held for a regulator's review (insufficient evidence)",
}


def _pair(interval: Mapping[str, float] | None) -> list[float] | None:
    return [interval["low"], interval["high"]] if interval else None


def _bounds(interval: Sequence[float] | None) -> str:
    return "" if not interval else f" [{_cell(interval[0])}, {_cell(interval[1])}]"


def _review_lines(review: Mapping[str, Any] | None) -> list[str]:
    """The regulator's signed review of a held model, for anyone to check with its key."""
    if not review:
        return []
    return [
        f"- Reviewed by regulator {review['regulator']} at {review['time']}: "
        f"{review['verdict']} ({review['note'] or 'no note'}); Ed25519 signature "
        f"`{review['signature']}` over the statement `{review['statement']}`",
    ]


def _calibration_lines(calibration: Mapping[str, Any] | None) -> list[str]:
    if not calibration:
        return []
    return [
        "## Calibration",
        "",
        f"{calibration['method']}: calibrated score = sigmoid({calibration['a']:.4f} x logit + "
        f"{calibration['b']:.4f}). Expected calibration error on held-out halves of "
        f"{calibration['rows']} test rows: {_cell(calibration['ece_before'])} before, "
        f"{_cell(calibration['ece_after'])}{_bounds(calibration.get('ece_after_interval'))} "
        "after (95% bootstrap interval). The ranking (and so the AUC) is unchanged.",
        "",
    ]


def _fairness_lines(fairness: Mapping[str, Any]) -> list[str]:
    if not fairness.get("attributes"):
        return []
    lines = [
        "## Fairness",
        "",
        "Outcomes by group of each protected attribute over all companies' test rows; groups "
        "with fewer than 10 positives or negatives are not compared.",
        "",
        "| attribute | group | rows (+) | TPR | FPR | positive rate | AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for attribute, entry in fairness["attributes"].items():
        for g in entry["groups"]:
            lines.append(
                f"| {attribute} | {g['group']}{'' if g['judged'] else ' (too few)'} | "
                f"{g['rows']} ({g['positives']}) | {_cell(g['tpr'])} | {_cell(g['fpr'])} | "
                f"{_cell(g['positive_rate'])} | {_cell(g['auc'])} |"
            )
    lines += [
        "",
        f"Largest gaps: true-positive rate {_cell(fairness.get('tpr_gap'))}, false-positive "
        f"rate {_cell(fairness.get('fpr_gap'))}, positive-prediction rate "
        f"{_cell(fairness.get('parity_difference'))}.",
        "",
    ]
    return lines


def _attribution_lines(rows: Sequence[Mapping[str, Any]], top: int = 10) -> list[str]:
    if not rows:
        return []
    lines = [
        "## What drives the model",
        "",
        "| feature | AUC lost when shuffled | standardised weight |",
        "|---|---|---|",
    ]
    for row in rows[:top]:
        weight = (row.get("coefficient") or {}).get("weight")
        flag = " (protected)" if row.get("protected") else ""
        lines.append(
            f"| {row['feature']}{flag} | {_cell(row.get('permutation_auc_drop'))} | "
            f"{_cell(weight)} |"
        )
    return [*lines, ""]


def render_model_card(card: Mapping[str, Any]) -> str:
    """The model card as Markdown."""
    model, purpose, training = card["model"], card["purpose"], card["training"]
    assessment, release, privacy = card["assessment"], card["release"], card["privacy"]
    lines = [
        f"# Model card: {purpose['name']} (job {model['job_id']})",
        "",
        f"- Model: {model['kind']}, {model['input_dim']} inputs, SHA-256 `{model['sha256']}`",
        f"- Purpose: {purpose['description'] or purpose['name']}",
        f"- Release: **{_OUTCOME.get(release.get('outcome', ''), 'allowed' if release['allowed'] else 'denied')}** ({release['tier']} tier,"
        f" decided by {release['decided_by']})",
        *_review_lines(release.get("review")),
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
        "federated AUC; in brackets the 95% interval the company computed (DeLong; the gap's "
        "paired on the same rows).",
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
            f"{_cell(r['federated']['auc'])}{_bounds(r.get('auc_interval'))} | "
            f"{_cell((r['local'] or {}).get('auc'))} | "
            f"{_cell(r['auc_gap'])}{_bounds(r.get('gap_interval'))} | {_cell(r['federated']['ece'])} | "
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
        f"AUC over all companies' test rows {_cell((assessment.get('pooled_auc') or {}).get('estimate'))}"
        f"{_bounds(_pair(assessment.get('pooled_auc')))} (from their summed histograms). "
        f"Worst-company gap {_cell(assessment['worst_company_gap'])} "
        f"({assessment['worst_company'] or '–'}); largest bounds of the gap intervals: lower "
        f"{_cell(assessment.get('worst_company_gap_low'))}, upper "
        f"{_cell(assessment.get('worst_company_gap_high'))}; calibration error over all test rows "
        f"{_cell(assessment['calibration_error'])}; mean AUC drop under perturbation: {drops}.",
        "",
        *_calibration_lines(assessment.get("calibration")),
        *_fairness_lines(assessment.get("fairness") or {}),
        *_attribution_lines(assessment.get("attributions") or []),
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


def release_folder(run_dir: Path) -> Path:
    return run_dir / "release"


def withdraw_release(run_dir: Path) -> None:
    """A model that is denied or held must not sit in the export folder, even from an
    earlier decision."""
    if release_folder(run_dir).exists():
        shutil.rmtree(release_folder(run_dir))


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
