"""The release gate: the assessment from the companies' metrics, the verdict per tier, the
export only on allow, the record either way."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.contribution import Setting, initial_weights, plan_for, run_fedavg
from clients import assess, work
from coordinator.assessment import Assessment, build_assessment
from coordinator.governed import PolicyGate, release_context, release_verdict
from coordinator.persistence import load_weights, model_hash, save_weights
from coordinator.release import RegistryRecorder, ReleaseVerdict, conclude_release
from policies.engine import MemoryRecorder, PolicyDecisionPoint
from policies.facts import DatasetFacts, EngineerFacts, JobFacts
from policies.policyset import DEFAULT_POLICY_DIR, LoadedPolicySet, policy_files
from sandbox.config import Settings
from sandbox.data import census
from sandbox.governance import get_governance
from sandbox.learning.encoding import CategoricalFeature, FeatureSpec, NumericFeature
from sandbox.learning.metrics import calibration_bins, expected_calibration_error
from sandbox.learning.robustness import RobustnessSettings
from sandbox.node.home import NodeHome
from sandbox.privacy.budget import shipped_tiers
from sandbox.protocol.jobspec import JobSpec
from sandbox.registry import companies as company_store
from sandbox.registry import jobs as job_store
from sandbox.reports.model_card import privacy_summary
from sandbox.runtime.bare import serving_plan
from sandbox.services import companies
from tests.support.world import file_bare, run_bare

ENCODING = FeatureSpec(
    target="y",
    numeric=(NumericFeature(name="age"), NumericFeature(name="hours")),
    categorical=(CategoricalFeature(name="sector", vocabulary=("private", "public", "self")),),
)
# An industry of each tier (policies/tiers.toml).
TIER_INDUSTRY = {"high": "Hospital services", "low": "Construction"}


def release_decision(
    assessment: Assessment, tier: str, tiers_toml: bytes | None = None
) -> ReleaseVerdict:
    """Cedar's ``release_model`` on ``assessment``, for an approved job of ``tier`` (over the
    shipped policy set, or one whose tiers.toml is ``tiers_toml``)."""
    files = policy_files(DEFAULT_POLICY_DIR)
    if tiers_toml is not None:
        files["tiers.toml"] = tiers_toml
    pdp = PolicyDecisionPoint(LoadedPolicySet.from_files(files), MemoryRecorder())
    dataset = DatasetFacts("a/census", "a", TIER_INDUSTRY[tier], "general", False)
    job = JobFacts("job-r", "eve", "p", ("a",), (dataset.id,), True, None, approved=True)
    decision = pdp.decide(
        EngineerFacts("eve"), "release_model", job, release_context(assessment), [dataset]
    )
    return release_verdict(decision, assessment, tier)


def release_verdict_with_review(assessment: Assessment, tier: str) -> ReleaseVerdict:
    """The decision once a regulator has reviewed the assessment's thin evidence."""
    pdp = PolicyDecisionPoint(LoadedPolicySet.from_dir(), MemoryRecorder())
    dataset = DatasetFacts("a/census", "a", TIER_INDUSTRY[tier], "general", False)
    job = JobFacts("job-r", "eve", "p", ("a",), (dataset.id,), True, None, approved=True)
    context = release_context(assessment, evidence_reviewed=True)
    decision = pdp.decide(EngineerFacts("eve"), "release_model", job, context, [dataset])
    return release_verdict(decision, assessment, tier)


def reply_of(assessment: Assessment) -> dict[str, float]:
    """An assess reply that gives the first company's figures of ``assessment`` back."""
    row = assessment.companies[0]
    y = np.r_[np.ones(row.test_positives), np.zeros(row.test_negatives)]
    return company_reply(row.federated["auc"] or 0.0, row.test_rows, y, np.full(len(y), 0.3))


def tiers_with(tier: str, limit: str) -> bytes:
    """The shipped tiers.toml with every release limit of ``tier`` set to ``limit``."""
    text = (DEFAULT_POLICY_DIR / "tiers.toml").read_text()
    head, _, rest = text.partition(f"[tiers.{tier}]")
    table, _, tail = rest.partition("\n\n")
    for name in ("worst_company_gap", "calibration_error", "robustness_drop"):
        start = table.index(f"release_max_{name}")
        end = table.index("\n", start)
        table = table[:start] + f'release_max_{name} = "{limit}"' + table[end:]
    return (head + f"[tiers.{tier}]" + table + "\n\n" + tail).encode()


def failed(verdict: ReleaseVerdict) -> list[str]:
    return [c.name for c in verdict.checks if not c.passed]


def company_reply(
    auc: float,
    rows: int,
    y: np.ndarray,
    score: np.ndarray,
    gap: tuple[float, float, float] | None = None,
    **perturbed: float,
) -> dict[str, float]:
    """Metrics as a company's ``assess`` reply carries them (``gap``: the paired interval of
    its gap to its own model, estimate, low, high)."""
    metrics = {
        "num-examples": float(rows),
        "positives": float(y.sum()),
        "clean/auc": auc,
        "clean/balanced-accuracy": auc - 0.1,
        "clean/ece": float(expected_calibration_error(y, score)),  # type: ignore[arg-type]
        "clean/loss": 0.3,
    }
    if gap is not None:
        metrics["gap/auc"], metrics["gap/auc-low"], metrics["gap/auc-high"] = gap
    for kind in ("noise", "missing", "shift"):
        metrics[f"{kind}/auc"] = perturbed.get(kind, auc)
    metrics["missing/feature"] = 1.0
    metrics["shift/category"] = 2.0
    for part, values in zip(("count", "score", "label"), calibration_bins(y, score), strict=True):
        metrics.update({f"calibration/{part}/{b}": float(v) for b, v in enumerate(values)})
    return metrics


def assessment_of(  # type: ignore[no-untyped-def]
    local: dict[str, float], federated: dict[str, float], half_width: float = 0.01, **extra: Any
):
    """The assessment of companies whose federated and local AUCs are given; each company
    with both reports its gap's interval as the gap plus or minus ``half_width``."""
    rng = np.random.default_rng(0)
    parts = {}
    for company in federated:
        score = rng.uniform(0.02, 0.6, 3000)  # calibrated: labels drawn at the score
        parts[company] = ((rng.random(3000) < score).astype(float), score)
    gaps = {
        c: (local[c] - auc, local[c] - auc - half_width, local[c] - auc + half_width)
        for c, auc in federated.items()
        if c in local
    }
    replies = {
        c: company_reply(auc, 3000, *parts[c], gaps.get(c), **extra.get(c, {}))
        for c, auc in federated.items()
    }
    baselines = {c: {"auc": a, "balanced-accuracy": a - 0.1} for c, a in local.items()}
    return (
        build_assessment(
            sorted({*local, *federated}),
            replies,
            baselines,
            {},
            ENCODING,
            RobustnessSettings(),
        ),
        parts,
    )


# ------------------------------------------------------------------ assessment
def test_the_assessment_sets_each_company_beside_its_local_model() -> None:
    assessment, parts = assessment_of(
        local={"a": 0.80, "b": 0.90, "c": 0.70, "gone": 0.8},
        federated={"a": 0.85, "b": 0.86, "c": 0.69},
        b={"noise": 0.80, "missing": 0.70},
    )
    rows = {r.company: r for r in assessment.companies}
    assert rows["a"].auc_gap == pytest.approx(-0.05)
    assert assessment.worst_company == "b" and assessment.worst_company_gap == pytest.approx(0.04)
    assert assessment.worst_balanced_accuracy_gap == pytest.approx(0.04)
    assert assessment.not_assessed == {"gone": "no assessment received"}
    # Calibration over all companies' test rows, exactly, from the summed bins.
    y = np.concatenate([parts[c][0] for c in "abc"])
    score = np.concatenate([parts[c][1] for c in "abc"])
    assert assessment.calibration_error == pytest.approx(expected_calibration_error(y, score))
    # Robustness: AUC drop per perturbation, weighted by test rows (equal here).
    assert assessment.robustness_drop["noise"] == pytest.approx(0.06 / 3)
    assert assessment.robustness_drop["missing"] == pytest.approx(0.16 / 3)
    assert assessment.worst_robustness_drop == ("missing", pytest.approx(0.16 / 3))
    assert rows["b"].perturbed["missing"]["feature"] == "hours"
    assert rows["b"].perturbed["shift"]["category"] == "self"
    assert assessment.robustness["shift_column"] == "sector"
    json.dumps(assessment.to_json())


def test_a_high_tier_release_is_denied_below_its_thresholds() -> None:
    assessment, _ = assessment_of(local={"a": 0.80, "b": 0.90}, federated={"a": 0.85, "b": 0.82})
    high = release_decision(assessment, "high")
    assert not high.allowed and high.tier == "high"
    assert high.outcome == "deny"
    assert any(
        "lower bound of the largest gap's 95% interval is 0.07 in AUC" in r and "(high: 0.05)" in r
        for r in high.reasons
    ), high.reasons
    assert failed(high) == ["release.worst_company_gap"]
    gap = next(c for c in high.checks if c.name == "release.worst_company_gap")
    assert gap.value == pytest.approx(0.07) and gap.limit == pytest.approx(0.05)
    # Every check of the tier is shown, with the policy's own words.
    assert {c.name for c in high.checks} == {
        "release.every_company_assessed",
        "release.worst_company_gap",
        "release.gap_evidence",
        "release.test_positives",
        "release.test_negatives",
        "release.calibration_error",
        "release.robustness_drop",
        "release.fairness_tpr_gap",
        "release.fairness_fpr_gap",
    }
    assert all(c.reason for c in high.checks)
    # The same model at the low tier: every threshold met.
    low = release_decision(assessment, "low")
    assert low.allowed and low.reasons == ["every low-tier release check is met"]
    assert not failed(low) and low.outcome == "allow"


def test_a_gap_the_evidence_cannot_judge_is_held_for_review_not_denied() -> None:
    """b's gap of 0.08 with an interval from -0.02 to 0.18: neither above nor within 0.05."""
    thin, _ = assessment_of(
        local={"a": 0.80, "b": 0.90}, federated={"a": 0.85, "b": 0.82}, half_width=0.10
    )
    assert thin.worst_company_gap_low == pytest.approx(-0.02)
    assert thin.worst_company_gap_high == pytest.approx(0.18)
    high = release_decision(thin, "high")
    assert not high.allowed and high.outcome == "insufficient-evidence"
    assert failed(high) == ["release.gap_evidence"]
    assert "held for a regulator's review" not in high.reasons[0]  # the policy's own words
    assert "holds such a model for a regulator's review" in high.reasons[0]
    # A regulator's review of the thin evidence releases it; the low tier releases it as is.
    reviewed = release_verdict_with_review(thin, "high")
    assert reviewed.allowed and reviewed.outcome == "allow"
    assert release_decision(thin, "low").allowed
    # A clear gap is denied whatever the review says.
    clear, _ = assessment_of(local={"a": 0.80, "b": 0.90}, federated={"a": 0.85, "b": 0.82})
    denied = release_verdict_with_review(clear, "high")
    assert not denied.allowed and denied.outcome == "deny"


def test_a_company_with_too_few_positives_holds_the_model_for_review() -> None:
    few, _ = assessment_of(local={"a": 0.80, "b": 0.80}, federated={"a": 0.82, "b": 0.81})
    few = dataclasses.replace(few, fewest_test_positives=4)
    verdict = release_decision(few, "high")
    assert verdict.outcome == "insufficient-evidence"
    assert failed(verdict) == ["release.test_positives"]
    assert "only 4 positive rows" in verdict.reasons[0] and "(10)" in verdict.reasons[0]
    assert release_decision(few, "low").allowed  # the low tier's minimum is 5 and not binding


def test_a_gap_without_an_interval_cannot_clear_the_model() -> None:
    unpaired, _ = assessment_of(local={"a": 0.80}, federated={"a": 0.80})
    bare = dataclasses.replace(
        unpaired,
        companies=[dataclasses.replace(r, gap_interval=None) for r in unpaired.companies],
    )
    rebuilt = build_assessment(
        ["a"],
        {"a": {k: v for k, v in reply_of(unpaired).items() if not k.startswith("gap/")}},
        {"a": {"auc": 0.80}},
        {},
        ENCODING,
        RobustnessSettings(),
    )
    assert bare.companies[0].auc_gap == pytest.approx(0.0)
    assert rebuilt.worst_company_gap_high == 1.0 and rebuilt.worst_company_gap_low == -1.0
    assert release_decision(rebuilt, "high").outcome == "insufficient-evidence"


def test_each_threshold_can_deny_on_its_own() -> None:
    fine, _ = assessment_of(local={"a": 0.8, "b": 0.8}, federated={"a": 0.82, "b": 0.81})
    assert release_decision(fine, "high").allowed
    fragile, _ = assessment_of(
        local={"a": 0.8, "b": 0.8},
        federated={"a": 0.82, "b": 0.81},
        a={"shift": 0.55},
        b={"shift": 0.60},
    )
    verdict = release_decision(fragile, "high")
    assert not verdict.allowed and "a mean AUC drop of 0.24" in verdict.reasons[0]
    assert failed(verdict) == ["release.robustness_drop"]
    # A stricter calibration limit in the policy set's tiers.toml denies the same model.
    assert fine.calibration_error is not None
    strict = (
        (DEFAULT_POLICY_DIR / "tiers.toml")
        .read_text()
        .replace(
            'release_max_calibration_error = "0.05"',
            f'release_max_calibration_error = "{fine.calibration_error * 0.9:.4f}"',
        )
    )
    assert failed(release_decision(fine, "high", strict.encode())) == ["release.calibration_error"]
    absent, _ = assessment_of(local={"a": 0.8, "b": 0.8, "c": 0.8}, federated={"a": 0.82})
    verdict = release_decision(absent, "high")
    assert not verdict.allowed and failed(verdict) == ["release.every_company_assessed"]
    assert any("was not assessed at 2 of its companies" in r for r in verdict.reasons)
    assert release_decision(absent, "low").allowed  # the low tier does not require it
    # A gap that cannot be measured is not a gap that passes.
    unmeasured, _ = assessment_of(local={}, federated={"a": 0.82})
    verdict = release_decision(unmeasured, "low")
    assert not verdict.allowed
    assert any("not measurable, counted as the worst" in r for r in verdict.reasons)


def test_the_tier_and_its_thresholds_are_the_policy_sets() -> None:
    tiers = shipped_tiers()
    assert tiers.risk_tier(["Retail trade", "Construction"], ["general"]) == "low"
    for industry in ("Hospital services", "Medical except hospital"):
        assert tiers.risk_tier(["Retail trade", industry], ["general"]) == "high"
    assert tiers.risk_tier(["Finance insurance and real estate"], ["general"]) == "high"
    assert tiers.risk_tier(["Retail trade"], ["important"]) == "medium"
    assert tiers.risk_tier(["Retail trade"], ["core"]) == "high"
    high = tiers.tiers["high"]
    assert (high.release_max_worst_company_gap, high.release_require_every_company) == (
        Decimal("0.05"),
        True,
    )


def test_the_privacy_summary_sums_each_companys_runs_over_the_job() -> None:
    """Each receipt states one run's epsilon; a job that ran twice (stopped and resumed)
    spent the sum at each company, not the largest run."""
    from sandbox.registry.models import Receipt

    spec = JobSpec.model_validate(
        {"purpose": "p", "companies": ["a", "b"], "privacy": {"dp": {"epsilon": 3.0}}}
    )

    def receipt(company: str, round_: int, epsilon: float | None, task: str = "train") -> Receipt:
        return Receipt(
            job_id="job-1", round=round_, company_id=company, dataset_id=f"{company}/d",
            task=task, rows=10, epsilon=epsilon, payload="{}", signature="s",
        )  # fmt: skip

    receipts = [
        receipt("a", 1, 0.5),
        receipt("a", 2, 0.25),
        receipt("a", 2, None, task="evaluate"),
        receipt("b", 1, 0.75),
        receipt("a", 3, 1.0),  # the resumed run
    ]
    summary = privacy_summary(spec, receipts)
    assert summary["epsilon_spent"] == {"a": 1.75, "b": 0.75}
    assert "sum" in summary["note"]


# ------------------------------------------ the gate on real companies, without Flower
INDUSTRIES = ("Construction", "Finance insurance and real estate", "Education")


def companies_with_plan(settings: Settings, engine):  # type: ignore[no-untyped-def]
    setting = Setting(industries=INDUSTRIES, rows=(240,) * 3, shuffled=None, rounds=2)
    for industry in INDUSTRIES:
        companies.join(
            get_governance(settings),
            settings.company_dir(census.slug(industry)),
            census.slug(industry),
            industry,
            census.company_table(industry, rows=240, seed=0),
            purposes=("income-prediction",),
        )
    nodes = {c: NodeHome(settings.company_dir(c)) for c in setting.companies}
    return nodes, plan_for(nodes, setting)


def assess_at_companies(nodes, plan, weights):  # type: ignore[no-untyped-def]
    """What the runner gathers: each company's assess reply and local baseline."""
    robustness = RobustnessSettings()
    replies, baselines = {}, {}
    for company, node in nodes.items():
        with serving_plan(node, plan):
            # the baseline first, as in a job: the node keeps its local model for the gap
            baselines[company] = work.local_baseline(node, plan)[0].as_metrics()
            replies[company] = assess.assessment(node, plan, weights, robustness)
    return build_assessment(sorted(nodes), replies, baselines, {}, plan.encoding, robustness)


def conclude(settings, engine, job, plan, nodes, weights, assessment, verdict):  # type: ignore[no-untyped-def]
    """What the runner does once the verdict is in, for a model saved where it saves it."""
    run_dir = settings.runs_dir / job.id
    save_weights(run_dir / "model.npz", weights)
    digest = model_hash(weights)
    spec = job_store.job_spec(job)
    outcome = conclude_release(
        job=job,
        spec=spec,
        plan=plan,
        datasets=[company_store.get_dataset(engine, c, "census") for c in nodes],
        run_dir=run_dir,
        model_hash=digest,
        rounds_completed=plan.rounds,
        assessment=assessment,
        verdict=verdict,
        contributions=None,
        privacy=privacy_summary(spec, []),
        recorder=RegistryRecorder(engine),
    )
    return run_dir, digest, outcome


def test_a_denied_release_is_recorded_and_nothing_is_exported(
    sandbox_home: Settings, engine
) -> None:
    nodes, plan = companies_with_plan(sandbox_home, engine)
    job = job_store.get_job(
        engine, file_bare(engine, {"purpose": "income-prediction", "companies": list(nodes)})
    )
    tier = shipped_tiers().risk_tier(
        [company_store.get_dataset(engine, c, "census").industry for c in nodes], ["general"]
    )
    assert tier == "high"  # finance takes part

    # An untrained model: far below every company's local-only model.
    weights = initial_weights(plan)
    assessment = assess_at_companies(nodes, plan, weights)
    verdict = PolicyGate(engine, job, job_store.job_spec(job)).decide(job.id, tier, assessment)
    assert not verdict.allowed and verdict.outcome == "deny"
    assert any(
        "serves a company too much worse" in r and "(high: 0.05)" in r for r in verdict.reasons
    ), verdict.reasons
    assert assessment.worst_company_gap_low is not None
    assert assessment.worst_company_gap_low > 0.05  # the evidence, not chance
    assert verdict.decided_by.startswith("policy set ")
    run_dir, digest, outcome = conclude(
        sandbox_home, engine, job, plan, nodes, weights, assessment, verdict
    )
    assert outcome.exported_to is None
    assert not (run_dir / "release").exists()
    assert model_hash(load_weights(run_dir / "model.npz")) == digest  # kept, not exported
    [record] = job_store.releases_of(engine, job.id)
    assert not record.allowed and record.tier == "high" and record.model_hash == digest
    assert record.reasons == verdict.reasons and record.exported_to is None
    assert record.assessment["worst_company_gap"] == assessment.worst_company_gap
    kept = json.loads((run_dir / "release-assessment.json").read_text())
    assert kept["release"]["allowed"] is False

    # A trained model that meets the thresholds it is held to is exported with its card.
    trained = run_fedavg(sorted(nodes), nodes, plan)
    assessment = assess_at_companies(nodes, plan, trained)
    lenient = release_decision(assessment, "low", tiers_with("low", "1.0"))
    assert lenient.allowed
    run_dir, digest, outcome = conclude(
        sandbox_home, engine, job, plan, nodes, trained, assessment, lenient
    )
    folder = run_dir / "release"
    assert outcome.exported_to == folder
    assert sorted(p.name for p in folder.iterdir()) == [
        "model-card.json",
        "model-card.md",
        "model.npz",
    ]
    assert model_hash(load_weights(folder / "model.npz")) == digest
    card = json.loads((folder / "model-card.json").read_text())
    assert card["model"]["sha256"] == digest and card["release"]["allowed"] is True
    assert {d["company"] for d in card["data_sources"]} == set(nodes)
    assert {d["grade"] for d in card["data_sources"]} == {"general"}
    assert card["privacy"]["differential_privacy"] is None
    markdown = (folder / "model-card.md").read_text()
    for heading in ("Data sources", "Training", "Privacy", "Assessment", "Limits"):
        assert f"## {heading}" in markdown
    assert digest in markdown and "**allowed**" in markdown

    # Denied again (say, under stricter thresholds): the earlier export is withdrawn.
    denied = release_decision(assessment, "high", tiers_with("high", "0.0"))
    assert not denied.allowed
    conclude(sandbox_home, engine, job, plan, nodes, trained, assessment, denied)
    assert not folder.exists()
    assert [r.allowed for r in job_store.releases_of(engine, job.id)] == [False, True, False]


def test_the_company_side_assessment_sends_only_allowed_scalars(
    sandbox_home: Settings, engine, tmp_path: Path
) -> None:
    from flwr.app import MetricRecord, RecordDict

    from sandbox.protocol.messages import TASK_ASSESS, check_reply

    nodes, plan = companies_with_plan(sandbox_home, engine)
    node = next(iter(nodes.values()))
    weights = run_fedavg(sorted(nodes), nodes, plan)
    with serving_plan(node, plan):
        metrics = assess.assessment(node, plan, weights, RobustnessSettings())
    assert check_reply(TASK_ASSESS, RecordDict({"metrics": MetricRecord(metrics)})) == []
    assert {"clean/auc", "noise/auc", "missing/auc", "missing/feature"} <= set(metrics)
    assert metrics["num-examples"] == 60 and metrics["calibration/count/0"] >= 0
    assert sum(metrics[f"calibration/count/{b}"] for b in range(10)) == 60


# ------------------------------------------------------------- through Flower, end to end
@pytest.mark.slow
def test_a_job_ends_with_assessment_release_and_contributions(
    sandbox_home: Settings, engine
) -> None:
    """Five census companies, one with shuffled labels, one real Flower job. The product
    path's contribution estimate is checked against exact Shapley values of retraining all
    31 coalitions in-process (ground truth) from the same vaults and the job's own plan."""
    from scipy.stats import spearmanr

    from benchmarks.contribution import INDUSTRIES as FIVE
    from benchmarks.contribution import company_table, ground_truth
    from sandbox.protocol.messages import TrainingPlan

    setting = Setting()  # 5 companies x 300 rows, manufacturing-durable-goods shuffled
    for industry, rows in zip(FIVE, setting.rows, strict=True):
        companies.join(
            get_governance(sandbox_home),
            sandbox_home.company_dir(census.slug(industry)),
            census.slug(industry),
            industry,
            company_table(industry, rows, setting),
            purposes=("income-prediction",),
            seed=setting.seed,
        )
    spec = JobSpec(
        purpose="income-prediction",
        companies=tuple(setting.companies),
        rounds=setting.rounds,
        local_epochs=setting.local_epochs,
        learning_rate=setting.learning_rate,
        min_participants=3,
        seed=setting.seed,
    )
    job = job_store.get_job(engine, file_bare(engine, spec))
    # The learning engine alone: no DP (its noise would make the job's model differ from
    # the in-process ground truth), so no governance either (the policy requires DP here).
    outcome = run_bare(sandbox_home, [job.id])[job.id]
    assert outcome["status"] == "completed", outcome
    result = outcome["result"]
    run_dir = sandbox_home.runs_dir / job.id

    # Contributions: from the stored updates, scored by the companies through Flower.
    contributions = result["contributions"]
    assert contributions["method"] == "exact per-round Shapley"
    assert sorted(contributions["evaluators"]) == sorted(setting.companies)
    assert sorted(int(p.stem[-4:]) for p in (run_dir / "updates").glob("round-*.npz")) == [
        1,
        2,
        3,
        4,
        5,
    ]
    estimate = {c["company"]: c["shapley"] for c in contributions["companies"]}
    share = {c["company"]: c["share"] for c in contributions["companies"]}
    shuffled = census.slug(setting.shuffled)  # type: ignore[arg-type]
    assert min(share, key=share.__getitem__) == shuffled
    assert sum(share.values()) == pytest.approx(1.0)

    # Ground truth with the job's own plan; its grand coalition is the job's model.
    plan = TrainingPlan.model_validate(json.loads((run_dir / "state.json").read_text())["plan"])
    nodes = {c: NodeHome(sandbox_home.company_dir(c)) for c in setting.companies}
    federated = load_weights(run_dir / "model.npz")
    in_process = run_fedavg(sorted(nodes), nodes, plan)
    for name, value in federated.items():
        assert np.allclose(value, in_process[name], atol=1e-5)
    truth, _ = ground_truth(nodes, plan)
    keys = sorted(truth)
    rho = spearmanr([estimate[k] for k in keys], [truth[k] for k in keys]).statistic
    assert min(truth, key=truth.__getitem__) == shuffled
    assert round(rho, 9) >= 0.9, (truth, estimate)

    # The release: finance takes part, so the high tier; the export follows the verdict.
    release = result["release"]
    assert release["tier"] == "high" and release["model_hash"] == result["model_hash"]
    [record] = job_store.releases_of(engine, job.id)
    assert (record.allowed, record.reasons) == (release["allowed"], release["reasons"])
    assert (run_dir / "release").exists() == release["allowed"]
    minimums = {"release.test_positives", "release.test_negatives"}  # at least the limit
    for check in release["checks"]:
        value, limit = check["value"], check["limit"]
        if limit is not None:
            within = value is not None and (
                value >= limit if check["name"] in minimums else value <= limit
            )
            assert check["passed"] == within, check
    # Filed without governance, the high-tier job was never approved by a regulator: the
    # policy withholds its model whatever the figures say, and says why.
    assert not release["allowed"]
    assert any("no regulator approval" in r for r in release["reasons"]), release["reasons"]
    assessment = result["assessment"]
    assert {r["company"] for r in assessment["companies"]} == set(setting.companies)
    assert assessment["not_assessed"] == {}
    for row in assessment["companies"]:
        assert set(row["perturbed"]) >= {"noise", "missing"}
        assert row["local"]["auc"] is not None
    for check in release["checks"]:
        if not check["passed"]:
            assert any("(high: " in r for r in release["reasons"]), release["reasons"]
