"""Settlement through the API: compute vouchers under the written terms, a completed job's
statement (amounts that add up to the declared value, net = amount - compute + vouchers,
signed with the operator's key, CSV), each reader's view of it, and a contest that is
recorded, resolved and followed by a new revision."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from policies.facts import EngineerFacts, OperatorFacts
from sandbox import identity
from sandbox.config import Settings
from sandbox.data import census
from sandbox.data.validation import validate_frame
from sandbox.errors import Forbidden
from sandbox.governance import get_governance
from sandbox.protocol.jobspec import JobSpec
from sandbox.protocol.settlement import apportion, compute_cost, verify_statement
from sandbox.registry import jobs as job_store
from sandbox.registry.models import Receipt
from sandbox.services import companies as company_service
from sandbox.services import runs, settlements
from sandbox.services.jobs import file_job
from tests.api.conftest import PURPOSE, World
from tests.api.test_views import OWN, RIVAL, completed_job, token_of

HOUR, GB = 3600.0, 10**9


def metered_receipt(job: str, company: str, cpu: float, moved: int, index: int) -> Receipt:
    payload = {"company": company, "job": job, "round": index, "task": "train", "version": 4,
               "metering": {"cpu_seconds": cpu, "wall_seconds": cpu, "bytes_in": moved // 2,
                            "bytes_out": moved - moved // 2}}  # fmt: skip
    return Receipt(job_id=job, round=index, company_id=company, dataset_id=f"{company}/census",
                   task="train", rows=45, payload=json.dumps(payload), signature="s")  # fmt: skip


@pytest.fixture(scope="module")
def job(world: World) -> str:
    job = completed_job(world)
    job_store.add_receipts(world.gov.engine, [
        metered_receipt(job, OWN, HOUR, GB, 1), metered_receipt(job, OWN, HOUR, 0, 2),
        metered_receipt(job, RIVAL, HOUR / 2, GB // 2, 1),
    ])  # fmt: skip
    return job


def post(world: World, role: str, path: str, body: dict[str, Any]):  # type: ignore[no-untyped-def]
    return world.client.post(path, json=body, headers=token_of(world, role))


def test_the_statement_adds_up_is_signed_and_vouchers_pay_compute_first(
    world: World, job: str
) -> None:
    voucher = post(world, "operator", f"/companies/{OWN}/vouchers",
                   {"amount": "0.05", "purpose": "a small firm's first job"})  # fmt: skip
    assert voucher.status_code == 201, voucher.text
    assert voucher.json()["amount"] == 5
    settled = post(world, "engineer", f"/jobs/{job}/settlement", {"value": "10000.00"})
    assert settled.status_code == 201, settled.text
    body = settled.json()
    assert body["complete"] and body["revision"] == 1
    statement = verify_statement(body["statement_text"], body["signature"],
                                 identity.public_b64(world.keys["operator"]))  # fmt: skip
    lines = {c.company: c for c in statement.companies}
    assert sum(c.amount for c in statement.companies) == statement.value == 1_000_000
    assert lines[OWN].amount == apportion(1_000_000, {OWN: 0.4088, RIVAL: 0.5912})[OWN] == 408_800
    # OWN's node metered two CPU-hours, a gigabyte and two tasks:
    # 2 x 0.05 + 1 x 0.01 + 2 x 0.01 = 0.13 EUR.
    prices = {"cpu_hour": Decimal("0.05"), "gigabyte": Decimal("0.01"), "task": Decimal("0.01")}
    assert lines[OWN].compute_cost == compute_cost(2 * HOUR, GB, 2, prices) == 13
    assert lines[OWN].metered_tasks == 2
    assert (lines[OWN].vouchers, lines[OWN].billed) == (5, 8)
    assert lines[RIVAL].vouchers == 0 and lines[RIVAL].compute_cost == 4  # .025 + .005 + .01
    for line in statement.companies:
        assert line.net == line.amount - line.compute_cost + line.vouchers
    assert statement.method == "leave-one-out"
    balance = world.client.get(f"/companies/{OWN}/vouchers", headers=token_of(world, "company"))
    assert balance.json()[0]["left"] == 0 and balance.json()[0]["used"] == 5
    # Any change to the signed text is found.
    bent = body["statement_text"].replace('"net":', '"net":1', 1)
    with pytest.raises(ValueError):
        verify_statement(bent, body["signature"], identity.public_b64(world.keys["operator"]))


def test_each_reader_sees_the_statement_the_policy_grants(world: World, job: str) -> None:
    own = world.client.get(f"/jobs/{job}/settlement", headers=token_of(world, "company"))
    assert own.status_code == 200, own.text
    shown = own.json()
    assert not shown["complete"] and shown["statement_text"] is None
    assert [c["company"] for c in shown["statement"]["companies"]] == [OWN]
    assert shown["statement"]["others"]["companies"] == 1 and RIVAL not in own.text
    full = world.client.get(f"/jobs/{job}/settlement", headers=token_of(world, "regulator"))
    assert full.json()["complete"] and RIVAL in full.text
    assert (
        world.client.get(
            f"/jobs/{job}/settlement", headers=token_of(world, "other_company")
        ).status_code
        == 403
    )
    csv = world.client.get(f"/jobs/{job}/settlement.csv", headers=token_of(world, "company"))
    assert csv.headers["content-type"].startswith("text/csv")
    rows = csv.text.strip().splitlines()
    assert rows[0].startswith("job,revision,currency,company") and len(rows) == 3
    assert f",{OWN}," in rows[1] and "1 other companies" in rows[2] and RIVAL not in csv.text


def test_a_contest_is_recorded_resolved_and_revised(world: World, job: str) -> None:
    size = world.ledger_size
    again = post(world, "engineer", f"/jobs/{job}/settlement", {"value": "1"})
    assert again.status_code == 409 and "upheld contest" in again.text
    assert post(world, "other_company", f"/jobs/{job}/settlement/disputes",
                {"reason": "not mine"}).status_code == 403  # fmt: skip
    contest = post(world, "company", f"/jobs/{job}/settlement/disputes",
                   {"reason": "our node metered less CPU than this says"})  # fmt: skip
    assert contest.status_code == 201, contest.text
    dispute = contest.json()["id"]
    path = f"/jobs/{job}/settlement/disputes/{dispute}/resolve"
    assert post(world, "company", path, {"outcome": "upheld", "note": "me"}).status_code == 403
    resolved = post(world, "operator", path, {"outcome": "upheld", "note": "recounted"})
    assert resolved.status_code == 200 and resolved.json()["status"] == "upheld"
    twice = post(world, "regulator", path, {"outcome": "rejected", "note": "no"})
    assert twice.status_code == 409
    revised = post(world, "engineer", f"/jobs/{job}/settlement", {"value": "9000"})
    assert revised.status_code == 201 and revised.json()["revision"] == 2
    actions = [r["action"] for r in world.decisions_since(size)]
    assert "decision.contest_settlement" in actions and "decision.resolve_dispute" in actions
    records = [json.loads(e.entry)["action"] for e in world.gov.ledger.entries(
        after_index=size - 1, limit=1000)]  # fmt: skip
    for action in ("settlement.contested", "settlement.dispute_resolved", "job.settled"):
        assert action in records
    # The voucher pays once: revision 2 takes again what revision 1 took, not more.
    balance = world.client.get(f"/companies/{OWN}/vouchers", headers=token_of(world, "company"))
    assert balance.json()[0]["used"] == 5


def test_bad_settlement_requests_are_refused_clearly(world: World, job: str) -> None:
    running = world.admitted_job()
    early = post(world, "engineer", f"/jobs/{running}/settlement", {"value": "10"})
    assert early.status_code == 409 and "only a completed job is settled" in early.text
    for body in ({"value": "-1"}, {"value": "abc"}, {"value": 1e12}, {}, {"value": "1", "x": 1}):
        assert post(world, "engineer", f"/jobs/{job}/settlement", body).status_code == 422
    assert post(world, "operator", f"/companies/{OWN}/vouchers",
                {"amount": "50.01", "purpose": "too much"}).status_code == 403  # fmt: skip
    assert post(world, "company", f"/companies/{OWN}/vouchers",
                {"amount": "1", "purpose": "to myself"}).status_code == 403  # fmt: skip
    # Whether a company exists is not told to whom the policy refuses: decided first.
    assert post(world, "company", "/companies/no-such-firm/vouchers",
                {"amount": "1", "purpose": "x"}).status_code == 403  # fmt: skip
    assert post(world, "operator", "/companies/no-such-firm/vouchers",
                {"amount": "1", "purpose": "x"}).status_code == 404  # fmt: skip
    assert world.client.get("/companies/no-such-firm/vouchers",
                            headers=token_of(world, "company")).status_code == 403  # fmt: skip


def test_the_voucher_policy_admits_the_eligible_and_refuses_another(
    sandbox_home: Settings, tmp_path: Path
) -> None:
    """A large firm that took part in a completed job is not eligible; a small one is, and so
    is a large one in its first job."""
    gov = get_governance(sandbox_home)
    sizes = {"construction": 1400, "transportation": 60, "retail-trade": 1400}
    for company, rows in sizes.items():
        industry = {"construction": "Construction", "transportation": "Transportation",
                    "retail-trade": "Retail trade"}[company]  # fmt: skip
        table = validate_frame(census.industry_frame(industry, rows=rows, seed=1),
                               census.manifest_for(industry))  # fmt: skip
        company_service.join(gov, sandbox_home.company_dir(company), company, industry, table,
                             (PURPOSE,))  # fmt: skip
    spec = JobSpec.model_validate({"purpose": PURPOSE, "companies": ["construction",
                                   "transportation"], "privacy": {"dp": {"epsilon": 1.0}}})  # fmt: skip
    filed = file_job(gov, spec, EngineerFacts("engineer"))
    runs.begin(gov.engine, filed.job.id)
    runs.complete(gov.engine, filed.job.id, "ab" * 32, {"contributions": {"companies": []}})
    operator = OperatorFacts("operator")
    with pytest.raises(Forbidden, match="not eligible for a compute voucher"):
        settlements.issue_voucher(gov, operator, "construction", "10", 30, "growth")
    assert settlements.issue_voucher(gov, operator, "transportation", "10", 30, "small").amount
    assert settlements.issue_voucher(gov, operator, "retail-trade", "10", 30, "first job").amount


def test_the_report_carries_the_settlement_with_its_ledger_entries(world: World, job: str) -> None:
    report = world.client.get(f"/console/jobs/{job}/report.json",
                              headers=token_of(world, "regulator"))  # fmt: skip
    assert report.status_code == 200, report.text
    data = report.json()
    assert data["settlement"]["revision"] >= 1
    assert {c["company"] for c in data["settlement"]["statement"]["companies"]} == {OWN, RIVAL}
    said = [f["statement"] for f in data["facts"] if f["section"] == "settlement"]
    assert any(s.startswith("Settlement revision 1 drawn up by eve") for s in said)
    html = world.client.get(f"/console/jobs/{job}/report.html",
                            headers=token_of(world, "regulator"))  # fmt: skip
    assert '<h2 id="settlement">Settlement</h2>' in html.text and "per task" in html.text


def test_the_console_shows_each_reader_its_settlement(world: World, job: str) -> None:
    own = world.client.get(f"/console/jobs/{job}", headers=token_of(world, "company"))
    assert own.status_code == 200 and '<h2 id="settlement-h">Settlement</h2>' in own.text
    assert "1 other companies" in own.text and f"<td>{RIVAL}</td>" not in own.text
    full = world.client.get(f"/console/jobs/{job}", headers=token_of(world, "regulator"))
    assert f"<td>{RIVAL}</td>" in full.text and "Contest dsp-" in full.text
