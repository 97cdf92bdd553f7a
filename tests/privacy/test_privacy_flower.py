"""Privacy through the real coordinator on Flower's simulation engine: DP budgets that exclude
and stop, malicious updates refused, robust aggregation under poisoning, SecAgg+ rounds that
complete (and match plain FedAvg) or halt (and are caught)."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, RecordDict

from clients.accountant import privacy_path
from coordinator.persistence import load_weights
from policies.facts import EngineerFacts
from sandbox.config import Settings
from sandbox.db import session_scope
from sandbox.governance import get_governance
from sandbox.node.home import NodeHome
from sandbox.privacy.accounting import composed_epsilon, plan_schedule
from sandbox.privacy.budget import epsilon_cap
from sandbox.protocol.jobspec import DifferentialPrivacySpec, JobSpec
from sandbox.registry import jobs as job_store
from sandbox.registry import privacy as ledger
from sandbox.registry.models import PrivacySpend
from sandbox.runtime.bare import bare_client_app
from sandbox.runtime.simulation import run_jobs_on_simulation
from sandbox.services.jobs import file_job
from tests.support.attackers import attacking_client_app
from tests.support.world import file_bare, join, run_bare

pytestmark = pytest.mark.slow

PURPOSE = "income-prediction"


# Low-tier industries (policies/tiers.toml), with both classes in a 300-row test split.
LOW_TIER = [
    "Construction",
    "Manufacturing-durable goods",
    "Manufacturing-nondurable goods",
    "Transportation",
]
# Industries with both classes in a 300-row sample's test split.
INDUSTRIES = [
    "Construction",
    "Education",
    "Finance insurance and real estate",
    "Manufacturing-durable goods",
    "Manufacturing-nondurable goods",
    "Public administration",
    "Transportation",
    "Wholesale trade",
]


def file(engine, companies: list[str], **fields) -> str:  # type: ignore[no-untyped-def]
    """A job filed without governance: these tests drill the privacy mechanisms themselves
    (the governed path files through the policy engine, see ``file_governed``)."""
    return file_bare(engine, {"purpose": PURPOSE, "companies": companies, **fields})


def file_governed(settings: Settings, companies: list[str], **fields) -> str:  # type: ignore[no-untyped-def]
    spec = JobSpec.model_validate({"purpose": PURPOSE, "companies": companies, **fields})
    filed = file_job(get_governance(settings), spec, EngineerFacts("engineer"))
    assert filed.allowed and filed.job.status == "admitted", filed.reasons
    return filed.job.id


def final_auc(engine, job_id: str) -> float:  # type: ignore[no-untyped-def]
    return job_store.get_job(engine, job_id).result["mean_auc"]["federated"]


def node_account(settings: Settings, company: str) -> dict[str, Any]:
    path = privacy_path(NodeHome(settings.company_dir(company)), "census")
    return json.loads(path.read_text()) if path.exists() else {"runs": []}


def test_budgets_exclude_a_company_at_its_cap_and_stop_the_job(
    sandbox_home: Settings, engine
) -> None:
    companies = join(sandbox_home, engine, LOW_TIER)
    at_cap, running_out = companies[0], companies[1]
    dp = {"epsilon": 2.0}
    training = {"rounds": 3, "local_epochs": 1, "batch_size": 512, "learning_rate": 1.0}
    # An earlier job of the same purpose spends budget of two companies while this one runs
    # (at filing and at start each had enough: those checks are tests/api/test_budgets.py).
    earlier = file(engine, companies[:2], rounds=1)
    train_rows = len(NodeHome(sandbox_home.company_dir(running_out)).vault("census").read("train"))
    schedule = plan_schedule(DifferentialPrivacySpec(**dp), train_rows, 512, 1, 3)

    def spent_after(rounds: int) -> float:
        """The job's epsilon after the DP-trained local-only baseline and ``rounds`` rounds."""
        runs = [schedule.baseline_run] + [schedule.run] * rounds
        return composed_epsilon(runs, schedule.delta)

    cap = epsilon_cap("low")
    leaves_room_for_two = cap - (spent_after(2) + spent_after(3)) / 2

    def spend_elsewhere() -> None:
        """The earlier job spends while this one starts (after its budget check passed)."""
        with session_scope(engine) as session:
            for company, spent in ((at_cap, cap), (running_out, leaves_room_for_two)):
                session.add(
                    PrivacySpend(
                        company_id=company, purpose=PURPOSE, job_id=earlier, round=1,
                        epsilon=spent, epsilon_job=spent, delta=1e-4, noise_multiplier=1.0,
                        sample_rate=1.0, steps=1, status="reported",
                    )
                )  # fmt: skip

    job = file_governed(sandbox_home, companies, min_participants=3, privacy={"dp": dp}, **training)
    replies: list[tuple[str, str, RecordDict]] = []

    def observe(task: str, company: str, content: RecordDict) -> None:
        if not replies:  # the first reply (identification) comes before any DP run
            spend_elsewhere()
        replies.append((task, company, content))

    outcome = run_jobs_on_simulation(sandbox_home, [job], observer=observe)[job]

    assert outcome["status"] == "stopped", outcome
    assert "round 3: 2 companies may take part, fewer than the minimum 3" in outcome["reason"]
    rounds = job_store.rounds_of(engine, job)
    assert [(r.number, r.status) for r in rounds] == [
        (1, "completed"),
        (2, "completed"),
        (3, "failed"),
    ]
    for record in rounds:
        why = {s["company"]: s["reason"] for s in record.sat_out}
        assert at_cap in why and at_cap not in record.asked
        assert why[at_cap].startswith("removed by policy: ")
        assert "too little privacy budget left for this purpose" in why[at_cap]
        assert f"above the cap of the job's risk tier (low: {cap:g}" in why[at_cap]
    assert rounds[0].took_part == sorted(companies[1:])
    assert running_out in {s["company"] for s in rounds[2].sat_out}
    assert rounds[2].asked == [] and rounds[2].took_part == []
    # Every train reply stated its cost; the spend is in the database, settled per run.
    for task, _company, content in replies:
        if task == "train":
            assert {"epsilon", "epsilon-job", "delta"} <= set(content["metrics"].keys())
    # Three companies paid for their baseline (round 0) and two rounds; the one at its cap
    # was refused the baseline too.
    spends = ledger.job_spends(engine, job)
    assert len(spends) == 3 * (1 + 2) and all(s.status == "reported" for s in spends)
    assert at_cap not in {s.company_id for s in spends}
    for company in companies[1:]:
        total, runs = ledger.spent_in_job(engine, company, job)
        assert runs == 3 and total == pytest.approx(spent_after(2), rel=1e-6)
        # The node's own accountant holds the same runs for its dataset, and the same total.
        account = node_account(sandbox_home, company)
        mine = [r for r in account["runs"] if r["job"] == job]
        assert [r["kind"] for r in mine] == ["baseline", "train", "train"]
        assert mine[-1]["epsilon_job"] == pytest.approx(spent_after(2), rel=0.01)
    assert not any(r["job"] == job for r in node_account(sandbox_home, at_cap)["runs"])
    spent = ledger.spent_for_purpose(engine, running_out, PURPOSE).epsilon
    assert spent == pytest.approx(leaves_room_for_two + spent_after(2), rel=1e-6)
    assert spent <= cap
    assert rounds[0].metrics["privacy"][running_out]["status"] == "reported"
    # The ledger says why: each exclusion is a recorded participation decision.
    records = [json.loads(e.entry) for e in get_governance(sandbox_home).ledger.iter_entries()]
    denied = [
        r
        for r in records
        if r["action"] == "decision.participate_in_round" and not r["decision"]["allowed"]
    ]
    assert {(r["actor"]["principal"], r["round"]) for r in denied} >= {
        (at_cap, 1),
        (at_cap, 2),
        (at_cap, 3),
        (running_out, 3),
    }
    assert all("admission.dp_budget_left" in r["decision"]["policies"] for r in denied)


def test_bad_updates_are_refused_and_trimmed_mean_resists_poisoning(
    sandbox_home: Settings, engine, record_property: Callable[[str, object], None]
) -> None:
    companies = join(sandbox_home, engine, INDUSTRIES[:8])
    checked = file(
        engine, companies[:6], rounds=2, local_epochs=1, min_participants=3,
        privacy={"max_update_norm": 20.0},
    )  # fmt: skip
    training = {"rounds": 10, "local_epochs": 2, "evaluate_every": 10, "min_participants": 6}
    clean = file(engine, companies, **training)
    poisoned = file(engine, companies, **training)
    trimmed = file(
        engine, companies, strategy={"name": "fedtrimmedavg", "trim_beta": 0.2}, **training
    )
    attacker = companies[0]
    attacks = {
        (checked, companies[3]): "nan",
        (checked, companies[4]): "wrong-shape",
        (checked, companies[5]): "oversized",
        (poisoned, attacker): "sign-flip-x10",
        (trimmed, attacker): "sign-flip-x10",
    }
    outcomes = run_bare(
        sandbox_home,
        [checked, clean, poisoned, trimmed],
        company_app=partial(
            attacking_client_app, attacks=attacks, honest_app=bare_client_app(sandbox_home)
        ),
    )
    assert all(o["status"] == "completed" for o in outcomes.values()), outcomes

    for record in job_store.rounds_of(engine, checked):
        why = {r["company"]: r["reason"] for r in record.rejected}
        assert set(why) == set(companies[3:6]), why
        assert "holds NaN or infinite values" in why[companies[3]]
        assert "has shape (1, " in why[companies[4]]
        assert "exceeds the job's bound 20" in why[companies[5]]
        assert record.took_part == sorted(companies[:3])

    aucs = {name: final_auc(engine, job) for name, job in
            (("clean", clean), ("fedavg", poisoned), ("trimmed", trimmed))}  # fmt: skip
    record_property("mean_auc", aucs)
    assert abs(aucs["trimmed"] - aucs["clean"]) <= 0.02, aucs
    assert aucs["fedavg"] < aucs["clean"] - 0.1, aucs


def test_secure_aggregation_completes_or_is_caught_halting(sandbox_home: Settings, engine) -> None:
    companies = join(sandbox_home, engine, INDUSTRIES[:5])
    four = companies[:4]
    training = {"rounds": 2, "local_epochs": 1, "min_participants": 3}
    plain = file(engine, four, **training)
    secure = file(engine, four, privacy={"secure_aggregation": True}, **training)
    secure_dp = file(
        engine, four, batch_size=512, learning_rate=1.0,
        privacy={"secure_aggregation": True, "dp": {"epsilon": 2.0}}, **training,
    )  # fmt: skip
    halting = file(engine, companies, privacy={"secure_aggregation": True}, **training)
    replies: list[tuple[str, str, RecordDict]] = []
    outcomes = run_bare(
        sandbox_home,
        [plain, secure, secure_dp, halting],
        observer=lambda t, c, r: replies.append((t, c, r)),
        company_app=partial(
            attacking_client_app,
            dropouts={halting: set(companies[:2])},
            honest_app=bare_client_app(sandbox_home),
        ),
    )

    # Completed: every stage ran, the aggregate equals plain FedAvg up to quantisation.
    for job in (plain, secure, secure_dp):
        assert outcomes[job]["status"] == "completed", outcomes[job]
    runs = sandbox_home.runs_dir
    a, b = load_weights(runs / plain / "model.npz"), load_weights(runs / secure / "model.npz")
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-3
    for job in (secure, secure_dp):
        for record in job_store.rounds_of(engine, job):
            assert record.metrics["secure_aggregation"]["completed"] is True
            assert record.took_part == sorted(four)
    # The coordinator saw no company's update in a secure round: only metrics (and receipts).
    # Train replies: 2 rounds x 4 companies in each of the three completed jobs, and the 3
    # companies whose masked update arrived before the halting job's round halted.
    train_replies = [r for t, _, r in replies if t == "train"]
    assert len(train_replies) == 3 * 2 * 4 + 3
    arrays_seen = [r for r in train_replies if any(isinstance(v, ArrayRecord) for v in r.values())]
    assert len(arrays_seen) == 2 * 4  # the plain job's replies only
    # DP and SecAgg+ together: each company's cost arrived in clear and was settled, for
    # its DP-trained local-only baseline and for each of the two rounds.
    spends = ledger.job_spends(engine, secure_dp)
    assert len(spends) == 4 * (1 + 2) and all(s.status == "reported" for s in spends)
    assert sorted(s.round for s in spends) == [0] * 4 + [1] * 4 + [2] * 4

    # Halted: two of five companies drop while SecAgg+ collects masked updates.
    assert outcomes[halting]["status"] == "stopped"
    assert (
        "secure aggregation halted at collect_masked_vectors_stage" in outcomes[halting]["reason"]
    )
    (record,) = job_store.rounds_of(engine, halting)
    assert record.status == "failed"
    assert record.metrics["secure_aggregation"]["completed"] is False
    assert record.metrics["secure_aggregation"]["halted_at"] == "collect_masked_vectors_stage"
    assert job_store.get_job(engine, halting).rounds_completed == 0
    assert not (runs / halting / "weights-round-0001.npz").exists()
