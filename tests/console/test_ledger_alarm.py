"""The console pins the log's history in the browser, and the overview counts witnesses.

A regulator's browser keeps the largest checkpoint it verified; a later visit that shows a
larger tree is checked with a consistency proof from it. The operator, holding the key and
the signer's state file, rewrites an old entry, re-hashes everything and signs the forged
tree: the next visit raises the red alarm with both signed notes, and it stays on every page
until dismissed. Its own module, so that the forgery does not reach the other tests' world.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import World
from tests.console.test_browser import signed_in
from tests.ledger.helpers import operator_rewrites

pytestmark = pytest.mark.browser


def steps(page: Any) -> str:
    """The in-browser verification's steps, once it has settled (the page's CSP forbids the
    string evaluation a JavaScript predicate would need; a selector wait needs none)."""
    page.wait_for_selector("#verify-status.ok, #verify-status.failed")
    return str(page.locator("#verify-steps").inner_text())


def test_witnessed_checkpoints_are_counted_on_the_overview(
    world: World, server: str, browser: Any
) -> None:
    signed = world.gov.ledger.checkpoint()
    for role in ("regulator", "company"):
        answer = world.client.post(
            "/audit/cosignatures",
            json=world.cosignature(role, signed),
            headers=world.headers(role),
        )
        assert answer.status_code == 201, answer.text
    assert sorted(answer.json()["cosigners"]) == ["construction", "reg"]
    status = world.client.get("/audit/witnesses", headers=world.headers("regulator")).json()
    assert status["quorum"] == 2 and status["witnessed"] >= 1
    assert status["latest_witnessed"]["size"] == answer.json()["size"]

    page = signed_in(browser, server, world.token("regulator"))
    page.get_by_role("heading", name="Witnesses").wait_for()
    assert f"{status['witnessed']} of" in page.locator("#witnessed-count").inner_text()
    latest = page.locator("#latest-witnessed").inner_text()
    assert f"tree size {answer.json()['size']}, cosigned by 2" in latest
    page.context.close()


def test_a_rewritten_history_raises_the_red_alarm_in_the_browser(
    world: World, server: str, browser: Any, screenshots: Path
) -> None:
    page = signed_in(browser, server, world.token("regulator"))
    assert "this browser now holds the checkpoint of size" in steps(page)
    page.reload()  # the log grew with the reads: the new tree must extend the one held
    assert "extends the checkpoint of size" in steps(page)
    assert page.locator("#verify-status").inner_text() == "VERIFIED"
    assert not page.locator("#ledger-alarm").is_visible()

    # The operator, with the key and the signer's state file, rewrites entry 3 and re-signs.
    ledger = world.gov.ledger
    operator_rewrites(ledger, 3, "construction", "constructi0n")

    page.reload()
    shown = steps(page)
    assert page.locator("#verify-status").inner_text() == "FAILED"
    assert "the history was rewritten" in shown, shown
    banner = page.locator("#ledger-alarm")
    assert banner.is_visible() and "The history was rewritten" in banner.inner_text()
    page.get_by_text("Both signed notes").click()
    notes = page.locator("#ledger-alarm-notes").inner_text()
    assert notes.count("\u2014 ") >= 2 and "Shown now" in notes  # both notes, signed
    page.screenshot(path=screenshots / "ledger-alarm.png", full_page=True)

    # The alarm stays on every page of the console until the reader dismisses it.
    page.get_by_role("link", name="Audit log", exact=True).click()
    page.wait_for_url("**/console/audit")
    assert page.locator("#ledger-alarm").is_visible()
    page.get_by_role("button", name="Dismiss, and forget the checkpoint this browser holds").click()
    assert not page.locator("#ledger-alarm").is_visible()
    page.context.close()


def test_a_nodes_witness_alarm_shows_on_its_company_page(world: World) -> None:
    from coordinator.witnesses import WitnessRelay

    page = world.client.get("/console/companies/construction", headers=world.headers("company"))
    assert page.status_code == 200 and "node refused the ledger" not in page.text
    WitnessRelay(world.gov).record_alarm("construction", 40)
    [entry] = world.gov.ledger.entries(action="ledger.witness_alarm", company="construction")
    for role in ("company", "regulator"):
        page = world.client.get("/console/companies/construction", headers=world.headers(role))
        assert "node refused the ledger's history" in page.text
        assert f"entry {entry.index}</a>: checkpoint of size 40 refused" in page.text
    other = world.client.get("/console/companies/retail-trade", headers=world.headers("regulator"))
    assert "node refused the ledger" not in other.text
