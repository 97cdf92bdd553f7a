"""Privacy budgets checked before work starts: a DP job whose companies cannot pay for it
is refused at filing (and at start, once spending happened since), naming the companies,
recorded; `sandbox company budget` shows what is spent and left."""

from __future__ import annotations

import json

from sqlmodel import Session
from typer.testing import CliRunner

from sandbox.cli import app
from sandbox.registry.models import PrivacySpend
from tests.api.conftest import PURPOSE, World


def spend(world: World, company: str, job: str, epsilon: float) -> None:
    """A finished DP run of ``company`` in ``job`` that cost ``epsilon``."""
    with Session(world.gov.engine) as session:
        session.add(PrivacySpend(company_id=company, purpose=PURPOSE, job_id=job, round=1,
                                 epsilon=epsilon, epsilon_job=epsilon, delta=1e-5,
                                 noise_multiplier=1.0, sample_rate=0.1, steps=10,
                                 status="reported"))  # fmt: skip
        session.commit()


def test_a_job_its_companies_cannot_pay_for_is_refused_at_filing_and_start(world: World) -> None:
    # transportation spends most of its low-tier budget (cap 10) in an earlier job.
    earlier = world.admitted_job()
    runnable = world.admitted_job()  # filed while the budget still sufficed
    spend(world, "transportation", earlier, 9.0)
    spec = world.spec(["construction", "transportation"]).model_dump(mode="json")  # epsilon 2
    before = world.ledger_size
    refused = world.client.post("/jobs", json=spec, headers=world.headers("engineer"))
    assert refused.status_code == 409, refused.text
    detail = refused.json()["detail"]
    assert "refused at filing: 1 of the job's companies" in detail and "transportation" in detail
    assert "construction:" not in detail
    records = [json.loads(e.entry) for e in world.gov.ledger.entries(after_index=before - 1)]
    [short] = [r for r in records if r["action"] == "job.budget_short"]
    assert short["details"] == {"step": "filing", "companies": ["transportation"]}
    assert not [r for r in records if r["action"] == "job.filed"]
    # A job filed before the spending is refused at its start, naming the company.
    started = world.client.post(f"/jobs/{runnable}/start", headers=world.headers("engineer"))
    assert started.status_code == 409 and "refused at start" in started.json()["detail"]
    # Without the company that cannot pay, the same job is filed.
    others = {**spec, "companies": ["construction", "retail-trade"]}
    assert world.client.post("/jobs", json=others, headers=world.headers("engineer")).is_success

    shown = CliRunner().invoke(app, ["company", "budget", "transportation"])
    assert shown.exit_code == 0, shown.output
    line = next(row for row in shown.output.splitlines() if PURPOSE in row)
    assert "9.0000" in line and "1.0000" in line  # spent 9 of the low tier's 10
