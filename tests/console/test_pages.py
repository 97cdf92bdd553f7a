"""The console's pages without a browser: who may open which page (the policy's decision,
recorded as the API's equivalent read is), what each page shows, the approval form under the
same-origin rule, report downloads, and the server-drawn plots."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from typing import Any

import pytest
from sqlalchemy import text

from sandbox.reports import plots
from tests.api.conftest import World

PAGES_FOR_REGULATORS = ["/console", "/console/companies"]


def get(world: World, role: str, path: str, **kwargs: Any) -> Any:
    return world.client.get(path, headers=world.headers(role), follow_redirects=False, **kwargs)


def decisions(world: World, since: int, principal: str) -> list[dict[str, Any]]:
    return [r for r in world.decisions_since(since) if r["actor"]["principal"] == principal]


def proof_data(html: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="proof-data">(.*?)</script>', html)
    assert found, "the page embeds no proof data"
    return json.loads(found.group(1))


def test_without_a_session_every_page_sends_the_browser_to_sign_in(world: World) -> None:
    for path in ("/console", "/console/audit?job=x", "/console/jobs", "/console/audit/3"):
        response = world.client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/console/sign-in?next=%2Fconsole")
    page = world.client.get("/console/sign-in")
    assert page.status_code == 200 and 'for="token"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert world.client.get("/console/static/verify.js").status_code == 200


def test_the_session_cookie_of_post_auth_session_signs_the_console_in(world: World) -> None:
    session = world.client.post("/auth/session", json={"token": world.new_token("regulator")})
    assert session.status_code == 200
    try:
        page = world.client.get("/console", follow_redirects=False)
        assert page.status_code == 200 and "Signed in as <strong>reg</strong>" in page.text
    finally:
        world.client.cookies.clear()


def test_the_overview_shows_the_ledger_checkpoint_jobs_and_queue(world: World) -> None:
    waiting = world.awaiting_job()
    size = world.ledger_size
    page = get(world, "regulator", "/console")
    assert page.status_code == 200
    assert "signature verified" in page.text and "Approval queue" in page.text
    assert f'href="/console/jobs/{waiting}"' in page.text
    data = proof_data(page.text)
    assert data["checkpoint"].startswith(world.gov.ledger.origin + "\n")
    # Recorded exactly as the API's reads: the checkpoint (read_audit) and the job listings.
    actions = [r["action"] for r in decisions(world, size, "reg")]
    assert actions == ["decision.read_audit", "decision.list_jobs", "decision.list_jobs"]


@pytest.mark.parametrize("path", PAGES_FOR_REGULATORS)
def test_a_company_gets_a_recorded_403_on_regulator_pages(world: World, path: str) -> None:
    size = world.ledger_size
    page = get(world, "company", path)
    assert page.status_code == 403 and "Denied by policy" in page.text
    denied = decisions(world, size, "construction")
    assert denied and not denied[-1]["decision"]["allowed"]
    assert denied[-1]["decision"]["decision_id"] in page.text


def test_a_company_sees_its_own_data_and_only_its_own(world: World) -> None:
    own = get(world, "company", "/console/companies/construction")
    assert own.status_code == 200
    for heading in ("Datasets", "Consents", "Privacy budget spent", "Every use of the data"):
        assert heading in own.text
    assert "grade-general" in own.text and "census" in own.text
    size = world.ledger_size
    other = get(world, "company", "/console/companies/retail-trade")
    assert other.status_code == 403
    assert not decisions(world, size, "construction")[0]["decision"]["allowed"]
    # Its audit log is scoped to itself; asking for another company's entries is refused.
    log = get(world, "company", "/console/audit")
    assert log.status_code == 200 and 'value="construction" readonly' in log.text
    assert get(world, "company", "/console/audit?company=retail-trade").status_code == 403
    # The jobs it takes part in, and their pages in the reduced view.
    job = world.admitted_job()
    assert job in get(world, "company", "/console/jobs").text
    page = get(world, "company", f"/console/jobs/{job}")
    assert page.status_code == 200 and "Policy decisions about this job" not in page.text


def test_the_audit_log_filters_and_pages_by_index(world: World) -> None:
    first = get(world, "regulator", "/console/audit?limit=5")
    assert first.status_code == 200
    indexes = [int(i) for i in re.findall(r'<td><a href="/console/audit/(\d+)', first.text)]
    assert indexes == [0, 1, 2, 3, 4]
    assert 'href="/console/audit?limit=5&amp;after=4"' in first.text
    second = get(world, "regulator", "/console/audit?limit=5&after=4")
    assert re.findall(r'<td><a href="/console/audit/(\d+)', second.text)[0] == "5"
    denied = get(world, "regulator", "/console/audit?decision=deny&since=&company=")
    assert denied.status_code == 200 and "badge allow" not in denied.text
    joined = get(world, "regulator", "/console/audit?action=company.joined&company=transportation")
    assert joined.text.count("<code>company.joined</code>") == 1
    future = get(world, "regulator", "/console/audit?since=2999-01-01T00:00")
    assert "No entries match." in future.text
    bad = get(world, "regulator", "/console/audit?action=DROP%20TABLE")
    assert bad.status_code == 422 and "not a valid action" in bad.text


def test_an_entry_page_carries_its_bytes_proof_and_checkpoint(world: World) -> None:
    from sandbox.ledger import leaf_hash, verify_checkpoint, verify_inclusion

    index = world.gov.ledger.entries(limit=1, action="company.joined")[0].index
    size = world.ledger_size
    page = get(world, "regulator", f"/console/audit/{index}")
    assert page.status_code == 200 and "What it says" in page.text
    data = proof_data(page.text)
    head = verify_checkpoint(data["checkpoint"], data["public_key"])
    path = [bytes.fromhex(h) for h in data["audit_path"]]
    assert verify_inclusion(
        leaf_hash(data["entry"].encode()), index, data["tree_size"], path, head.root
    )
    assert decisions(world, size, "reg")[0]["action"] == "decision.read_audit"


def test_a_tampered_entry_is_served_for_the_browser_to_reject(world: World) -> None:
    index = world.gov.ledger.entries(limit=1, action="company.joined")[0].index
    original = world.gov.ledger.entry(index).entry.decode()
    get(world, "regulator", f"/console/audit/{index}")  # a checkpoint covers it now
    with world.gov.ledger.engine.begin() as conn:
        conn.execute(
            text("UPDATE ledger_entry SET entry = :e WHERE idx = :i"),
            {"e": original.replace('"company"', '"c0mpany"', 1), "i": index},
        )
    try:
        page = get(world, "regulator", f"/console/audit/{index}")
        assert page.status_code == 200 and "fail their check" in page.text
        assert "c0mpany" in proof_data(page.text)["entry"]
        log = get(world, "regulator", f"/console/audit?after={index - 1}&limit=2")
        assert log.status_code == 200 and 'class="bad"' in log.text
    finally:
        with world.gov.ledger.engine.begin() as conn:
            conn.execute(
                text("UPDATE ledger_entry SET entry = :e WHERE idx = :i"),
                {"e": original, "i": index},
            )


def test_approval_through_the_console_is_the_governed_operation_under_the_origin_rule(
    world: World,
) -> None:
    job = world.awaiting_job()
    page = get(world, "regulator", f"/console/jobs/{job}")
    assert page.status_code == 200 and "Decide on approval" in page.text
    assert "Decide on approval" not in get(world, "engineer", f"/console/jobs/{job}").text
    world.client.post("/auth/session", json={"token": world.new_token("regulator")})
    try:
        form = world.approval(job)
        foreign = world.client.post(
            f"/console/jobs/{job}/approve",
            data=form,
            headers={"Origin": "https://evil.example"},
            follow_redirects=False,
        )
        assert foreign.status_code == 403 and "Cross-site request refused" in foreign.text
        assert world.client.get(f"/jobs/{job}").json()["status"] == "awaiting_approval"
        origin = {"Origin": "http://testserver"}
        empty = world.client.post(
            f"/console/jobs/{job}/reject", data={"reason": " "}, headers=origin
        )
        assert empty.status_code == 422
        size = world.ledger_size
        done = world.client.post(
            f"/console/jobs/{job}/approve", data=form, headers=origin, follow_redirects=False
        )
        assert done.status_code == 303 and done.headers["location"].endswith("done=approved")
        assert world.client.get(f"/jobs/{job}").json()["approved_by"] == "reg"
        actions = [
            json.loads(e.entry)["action"] for e in world.gov.ledger.entries(after_index=size - 1)
        ]
        assert "decision.approve_job" in actions and "job.approved" in actions
        again = world.client.post(
            f"/console/jobs/{job}/approve", data=form, headers=origin, follow_redirects=False
        )
        assert again.status_code == 409 and "not awaiting approval" in again.text
    finally:
        world.client.cookies.clear()


def test_a_company_cannot_approve(world: World) -> None:
    job = world.awaiting_job()
    refused = world.client.post(
        f"/console/jobs/{job}/approve", data={"note": "x"}, headers=world.headers("company")
    )
    assert refused.status_code == 403 and "Denied by policy" in refused.text


def test_a_job_page_shows_its_filing_decisions_and_plots(world: World) -> None:
    job = world.admitted_job()
    page = get(world, "regulator", f"/console/jobs/{job}")
    assert page.status_code == 200
    spec_hash = get(world, "regulator", f"/jobs/{job}").json()["spec_hash"]
    assert spec_hash in page.text and "Policy decisions about this job" in page.text
    assert page.text.count('<svg viewBox="0 0') == 3
    assert f'href="/console/jobs/{job}/report.html"' in page.text
    assert get(world, "regulator", "/console/jobs/no-such-job").status_code == 404


def test_report_downloads_for_regulators_only(world: World) -> None:
    job = world.admitted_job()
    html = get(world, "regulator", f"/console/jobs/{job}/report.html")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "attachment" in html.headers["content-disposition"]
    assert not re.search(r"https?://", html.text)
    data = get(world, "regulator", f"/console/jobs/{job}/report.json").json()
    assert data["job_id"] == job and data["facts"]
    assert all(f["checkpoint_size"] > f["ledger_index"] for f in data["facts"])
    assert get(world, "company", f"/console/jobs/{job}/report.html").status_code == 403
    assert get(world, "regulator", f"/console/jobs/{job}/report.pdf").status_code == 422


def test_plots_are_accessible_svg_and_say_what_is_missing() -> None:
    line = plots.line_chart([(1, 0.6), (2, None), (3, 0.7)], title="AUC", x_label="round",
                            y_label="AUC", y_max=1.0)  # fmt: skip
    grouped = plots.grouped_bars({"a<b": {"local": 0.5, "federated": None}}, ["local", "federated"],
                                 title="Utility", y_label="AUC")  # fmt: skip
    empty = plots.bars({}, title="Nothing", y_label="epsilon")
    for svg in (line, grouped, empty):
        tree = ElementTree.fromstring(str(svg))
        assert tree.tag == "svg" and tree.get("role") == "img"
        assert tree.find("title") is not None and tree.find("desc") is not None
        assert "http" not in str(svg)
    assert (
        "round 1: 0.6" in str(line)
        and "round 2" not in ElementTree.fromstring(str(line)).find("desc").text
    )  # type: ignore[union-attr]
    assert "federated undefined" in str(grouped) and "a&lt;b" in str(grouped)
