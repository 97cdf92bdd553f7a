"""The console in a real browser: headless Chromium (Playwright) against the sandbox service
under uvicorn. A regulator signs in with a token, filters the log, opens an entry and sees its
proof verified by the browser's own WebCrypto; a tampered entry shows as FAILED; a regulator
approves a job; a company's credentials do not open regulator pages. Screenshots of the main
pages go to tests/artifacts/console/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from sandbox import identity
from tests.api.conftest import World
from tests.console.conftest import WAIT_MS

pytestmark = pytest.mark.browser


def signed_in(browser: Any, server: str, token: str, start: str = "/console") -> Any:
    """A new browser context signed in through the sign-in page; returns its page."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(server + start)
    assert "/console/sign-in" in page.url  # no session yet: sent to sign in
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/sign-in" not in url)
    return page


def test_a_regulator_signs_in_filters_the_log_and_verifies_an_entry_in_the_browser(
    world: World, server: str, browser: Any, screenshots: Path
) -> None:
    page = signed_in(browser, server, world.token("regulator"))
    page.get_by_role("heading", name="Overview").wait_for()
    # The overview's checkpoint, checked by the browser with the key the server shows.
    page.wait_for_function("document.getElementById('verify-status').textContent === 'VERIFIED'")
    page.screenshot(path=screenshots / "overview.png", full_page=True)

    page.get_by_role("link", name="Audit log", exact=True).click()
    page.get_by_label("Action").fill("company.joined")
    page.get_by_label("Company").fill("transportation")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url("**action=company.joined**")
    rows = page.locator("table.log tbody tr")
    assert rows.count() == 1
    assert "company.joined" in rows.first.inner_text()
    page.screenshot(path=screenshots / "audit-log.png", full_page=True)

    index = rows.first.locator("a").first.inner_text()
    rows.first.get_by_role("link", name=index, exact=True).click()
    page.get_by_role("heading", name=f"Ledger entry {index}").wait_for()
    status = page.locator("#verify-status")
    page.wait_for_function("document.getElementById('verify-status').textContent !== 'checking…'")
    assert status.inner_text() == "VERIFIED", page.locator("#verify-steps").inner_text()
    steps = page.locator("#verify-steps li")
    assert steps.count() == 4 and "signature verified" in steps.nth(0).inner_text()
    # The overview pinned its checkpoint in this browser; this one is checked against it.
    assert "the checkpoint this browser verified before" in steps.nth(1).inner_text()
    page.screenshot(path=screenshots / "entry-verified.png", full_page=True)

    # Pinning another key: the page warns, and the signature no longer verifies.
    page.get_by_label("Key to pin (base64, 32 bytes)").fill("A" * 43 + "=")
    page.get_by_role("button", name="Pin key").click()
    page.wait_for_function("document.getElementById('verify-status').textContent === 'FAILED'")
    assert page.locator("#pin-warning").is_visible()
    page.get_by_role("button", name="Pin the server's key").click()
    page.wait_for_function("document.getElementById('verify-status').textContent === 'VERIFIED'")
    assert not page.locator("#pin-warning").is_visible()
    page.context.close()


def test_an_entry_tampered_with_in_the_database_shows_as_failed(
    world: World, server: str, browser: Any, screenshots: Path
) -> None:
    index = world.gov.ledger.entries(limit=1, action="company.joined", company="retail-trade")[
        0
    ].index
    page = signed_in(browser, server, world.token("regulator"), f"/console/audit/{index}")
    page.wait_for_function("document.getElementById('verify-status').textContent === 'VERIFIED'")
    original = world.gov.ledger.entry(index).entry.decode()
    with world.gov.ledger.engine.begin() as conn:
        conn.execute(
            text("UPDATE ledger_entry SET entry = :entry WHERE idx = :idx"),
            {"entry": original.replace("retail-trade", "retail-trad3"), "idx": index},
        )
    try:
        page.reload()
        page.wait_for_function("document.getElementById('verify-status').textContent === 'FAILED'")
        steps = page.locator("#verify-steps").inner_text()
        assert "the entry was changed" in steps and "does not lead to the signed root" in steps
        assert "retail-trad3" in page.locator("#entry-bytes").inner_text()
        page.screenshot(path=screenshots / "entry-tampered.png", full_page=True)
        # The log lists it, flagged, rather than failing.
        page.goto(f"{server}/console/audit?after={index - 1}&limit=1")
        assert "changed" in page.locator("table.log tbody tr").first.inner_text()
    finally:
        with world.gov.ledger.engine.begin() as conn:
            conn.execute(
                text("UPDATE ledger_entry SET entry = :entry WHERE idx = :idx"),
                {"entry": original, "idx": index},
            )
    page.context.close()


def test_a_regulator_approves_a_pending_job_and_the_ledger_records_it(
    world: World, server: str, browser: Any, screenshots: Path, tmp_path: Path
) -> None:
    job = world.awaiting_job()
    page = signed_in(browser, server, world.token("regulator"))
    page.get_by_role("link", name=job).click()  # from the approval queue
    page.get_by_role("heading", name=f"Job {job}").wait_for()
    page.screenshot(path=screenshots / "job-awaiting-approval.png", full_page=True)
    size = world.ledger_size
    page.get_by_label("Note (recorded)").fill("secure aggregation and epsilon as the tier asks")
    # A key that is not the regulator's: the browser signs, the server refuses the signature.
    stranger = tmp_path / "stranger.pem"
    identity.write_private_key(stranger, identity.generate_key())
    page.get_by_label("Your private key (PEM)").set_input_files(str(stranger))
    page.get_by_role("button", name="Sign and approve job").click()
    page.get_by_text("is not regulator reg's").wait_for()
    assert (
        world.client.get(f"/jobs/{job}", headers=world.headers("regulator")).json()["status"]
        == "awaiting_approval"
    )
    page.goto(f"{server}/console/jobs/{job}")
    page.get_by_label("Note (recorded)").fill("secure aggregation and epsilon as the tier asks")
    own = tmp_path / "reg.pem"
    identity.write_private_key(own, world.keys["reg"])
    page.get_by_label("Your private key (PEM)").set_input_files(str(own))
    page.get_by_role("button", name="Sign and approve job").click()
    page.wait_for_url(f"**/console/jobs/{job}?done=approved")
    assert "The job was approved" in page.locator(".flash").inner_text()
    assert "approved by reg" in page.inner_text("main")
    page.screenshot(path=screenshots / "job-approved.png", full_page=True)

    records = [json.loads(e.entry) for e in world.gov.ledger.entries(after_index=size - 1)]
    decision = [r for r in records if r["action"] == "decision.approve_job"]
    assert decision and decision[0]["decision"]["allowed"] and decision[0]["job_id"] == job
    assert decision[0]["actor"]["principal"] == "reg"
    approved = [r for r in records if r["action"] == "job.approved"]
    assert approved and approved[0]["job_id"] == job
    page.context.close()


def test_a_companys_credentials_do_not_open_regulator_pages(
    world: World, server: str, browser: Any, screenshots: Path
) -> None:
    page = signed_in(browser, server, world.token("company"))
    # Signed in, a company lands on its own page: its datasets, consents, receipts.
    page.wait_for_url("**/console/companies/construction")
    page.get_by_role("heading", name="construction", exact=True).wait_for()
    assert "Datasets" in page.inner_text("main")
    page.screenshot(path=screenshots / "company-own-page.png", full_page=True)

    size = world.ledger_size
    for path in ("/console", "/console/companies", "/console/companies/retail-trade",
                 "/console/audit?company=retail-trade"):  # fmt: skip
        response = page.goto(server + path)
        assert response is not None and response.status == 403, path
        assert "Denied by policy" in page.inner_text("h1"), path
    page.screenshot(path=screenshots / "company-denied.png", full_page=True)
    denials = [
        r for r in world.decisions_since(size)
        if r["actor"]["principal"] == "construction" and not r["decision"]["allowed"]
    ]  # fmt: skip
    assert len(denials) == 4
    page.context.close()
