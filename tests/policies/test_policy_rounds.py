"""Choosing a round's participants: consent live, budget left, not revoked; the job goes on
while enough participants remain."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from policies.facts import CompanyFacts, ConsentFacts, DatasetFacts, RoundContext
from policies.rounds import select_participants

from .conftest import World


def approved(world: World, *more: str) -> World:
    """The world's job approved, with extra hospitals ``more`` taking part."""
    for c in more:
        world.companies[c] = CompanyFacts(c, "Hospital services")
        world.datasets[c] = DatasetFacts(f"d-{c}", c, "Hospital services", "general", True)
        world.consents[c] = replace(world.consents["h1"], id=f"k-{c}", company=c, dataset=f"d-{c}")
    world.job = replace(
        world.job,
        approved=True,
        participants=tuple(world.companies),
        datasets=tuple(d.id for d in world.datasets.values()),
    )
    return world


def contexts(world: World, spent: dict[str, str] | None = None) -> dict[str, RoundContext]:
    spent = spent or {}
    return {
        c: RoundContext(5, Decimal(spent.get(c, "1.0")), Decimal("0.5")) for c in world.companies
    }


def revoke(world: World, company: str) -> None:
    world.consents[company] = replace(world.consents[company], revoked=True)


def test_everyone_takes_part_while_all_is_well(pdp, recorder, world) -> None:
    world = approved(world)
    sel = select_participants(pdp, world.job, world.companies, contexts(world), world.facts())
    assert sel.selected == ("h1", "h2", "h3") and not sel.stopped and not sel.removed
    assert len(recorder.decisions) == 3 and all(d.allowed for d in recorder.decisions)


def test_a_revoked_consent_removes_the_company_and_the_job_goes_on(pdp, recorder, world):
    world = approved(world, "h4")
    revoke(world, "h2")
    sel = select_participants(pdp, world.job, world.companies, contexts(world), world.facts())
    assert sel.selected == ("h1", "h3", "h4") and not sel.stopped
    assert set(sel.removed) == {"h2"}
    assert sel.removed["h2"].policies == ("consent.live_for_round",)
    assert "d-h2" not in sel.job.datasets and sel.job.participants == ("h1", "h3", "h4")
    # first pass: four asked, h2 denied; second pass: the three remaining, all allowed
    assert [d.allowed for d in recorder.decisions] == [True, False, True, True, True, True, True]


def test_the_job_stops_when_too_few_remain(pdp, recorder, world) -> None:
    world = approved(world)
    revoke(world, "h3")
    sel = select_participants(pdp, world.job, world.companies, contexts(world), world.facts())
    assert sel.stopped and sel.selected == ()
    assert sel.removed["h3"].policies == ("consent.live_for_round",)
    assert any("needs at least 3" in r for r in sel.reasons)
    assert len(recorder.decisions) == 5  # 3 in the first pass, 2 in the second
    assert not any(d.allowed for d in recorder.decisions[3:])


def test_a_company_whose_budget_is_spent_sits_out(pdp, world) -> None:
    world = approved(world, "h4")
    sel = select_participants(
        pdp, world.job, world.companies, contexts(world, {"h4": "2.8"}), world.facts()
    )
    assert sel.selected == ("h1", "h2", "h3")
    assert sel.removed["h4"].policies == ("admission.dp_budget_left",)
    assert "epsilon 3.3" in sel.removed["h4"].reasons[0]


def test_an_expired_consent_removes_the_company(pdp, world) -> None:
    from .conftest import EARLIER

    world = approved(world, "h4")
    world.consents["h1"] = replace(world.consents["h1"], expires_at=EARLIER)
    sel = select_participants(pdp, world.job, world.companies, contexts(world), world.facts())
    assert set(sel.removed) == {"h1"} and not sel.stopped


def test_a_suspended_company_is_removed(pdp, world) -> None:
    world = approved(world, "h4")
    world.companies["h4"] = replace(world.companies["h4"], status="suspended")
    sel = select_participants(pdp, world.job, world.companies, contexts(world), world.facts())
    assert sel.removed["h4"].policies == ("baseline.company.not_suspended",)


def test_an_unapproved_high_risk_job_does_not_start(pdp, world) -> None:
    sel = select_participants(pdp, world.job, world.companies, contexts(world), world.facts())
    assert sel.stopped
    assert sel.reasons[0].startswith("High-risk job 'job-1' has no regulator approval")


def test_consents_for_another_purpose_do_not_count(pdp, world) -> None:
    world = approved(world)
    world.consents["h1"] = ConsentFacts(
        "k-h1", "h1", "d-h1", "marketing", world.consents["h1"].expires_at
    )
    sel = select_participants(pdp, world.job, world.companies, contexts(world), world.facts())
    assert sel.stopped and "h1" in sel.removed
