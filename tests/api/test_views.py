"""Every party sees its own view of a job: two competitors in one job, its engineer, another
engineer, a regulator and the operator read the same job's rounds, result, overview, event
stream and console page. A company gets its own figures and the job-level aggregates; its
competitor's figures, absence reasons and name in texts are not there. The policy
(``read_job_figures``) decides whose figures each reader sees."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sandbox.registry.models import Round
from sandbox.services import principals as principal_service
from sandbox.services import runs
from tests.api.conftest import World
from tests.api.test_jobs_and_audit import events

OWN, RIVAL = "construction", "transportation"
# Figures that belong to one company: each appears once in the stored job, nowhere else.
OWN_AUC, RIVAL_AUC, RIVAL_EPSILON = 0.7123, 0.6789, 1.4321


def completed_job(world: World) -> str:
    """An admitted job of OWN and RIVAL, with one recorded round and a result, as a run of
    the coordinator stores them."""
    job = world.admitted_job()
    runs.begin(world.gov.engine, job)
    metrics = {
        "evaluation": {
            "companies": {OWN: {"auc": OWN_AUC}, RIVAL: {"auc": RIVAL_AUC}},
            "mean_auc": 0.6956,
        },
        "privacy": {"companies": {OWN: {"epsilon": 1.1}, RIVAL: {"epsilon": RIVAL_EPSILON}}},
    }
    record = Round(job_id=job, number=1, status="completed", asked=[OWN, RIVAL],
                   took_part=[OWN], missing=[{"company": RIVAL, "reason": "rival's budget"}],
                   rejected=[], metrics=metrics)  # fmt: skip
    runs.store_round(world.gov.engine, record, True)
    result = {
        "companies": {
            OWN: {"local": {"auc": 0.70}, "federated": {"auc": OWN_AUC}},
            RIVAL: {"local": {"auc": 0.71}, "federated": {"auc": RIVAL_AUC}},
        },
        "mean_auc": {"local": 0.705, "federated": 0.6956},
        "assessment": {
            "companies": [{"company": OWN, "test_rows": 31}, {"company": RIVAL, "test_rows": 37}],
            "worst_company": RIVAL,
            "worst_company_gap": 0.0311,
        },
        "contributions": {
            "method": "leave-one-out",
            "companies": [{"company": OWN, "share": 0.4088}, {"company": RIVAL, "share": 0.5912}],
        },
        "release": {"allowed": False, "reasons": [f"{RIVAL}'s AUC fell 0.0311 below its own"]},
    }
    runs.complete(world.gov.engine, job, "ab" * 32, result)
    return job


def token_of(world: World, role: str) -> dict[str, str]:
    if role == "rival":
        token = principal_service.issue_token_locally(world.gov, "company", RIVAL).token
        return {"Authorization": f"Bearer {token}"}
    return world.headers(role)


def rival_figures_in(text: str) -> list[str]:
    """What of the rival's own shows in ``text`` (a JSON answer, an event, a page)."""
    compact = text.replace(" ", "")
    figures = [str(RIVAL_AUC), str(RIVAL_EPSILON), "0.5912", '"test_rows":37']
    found = [shown for shown in figures if shown in compact]
    found += [shown for shown in ("rival's budget", f"{RIVAL}'s") if shown in text]
    return found + ([RIVAL] if f'"{RIVAL}":' in compact else [])


@pytest.fixture(scope="module")
def job(world: World) -> str:
    return completed_job(world)


@pytest.mark.parametrize("path", ["/jobs/{job}/rounds", "/jobs/{job}/result"])
@pytest.mark.parametrize(
    ("role", "sees_all"),
    [("company", False), ("engineer", True), ("regulator", True), ("operator", True)],
)
def test_each_reader_sees_the_figures_the_policy_grants(
    world: World, job: str, path: str, role: str, sees_all: bool
) -> None:
    answer = world.client.get(path.format(job=job), headers=token_of(world, role))
    assert answer.status_code == 200, answer.text
    text = answer.text
    assert str(OWN_AUC) in text  # the company's own figure, and everyone else's view of it
    if sees_all:
        assert str(RIVAL_AUC) in text
    else:
        assert rival_figures_in(text) == [], text
        assert "another company" in text or path.endswith("rounds")


def test_the_rival_sees_its_own_and_not_the_company_s(world: World, job: str) -> None:
    rounds = world.client.get(f"/jobs/{job}/rounds", headers=token_of(world, "rival")).json()
    [record] = rounds["rounds"]
    assert record["metrics"]["evaluation"]["companies"] == {RIVAL: {"auc": RIVAL_AUC}}
    assert record["metrics"]["evaluation"]["mean_auc"] == 0.6956  # the job-level aggregate
    assert record["missing"] == [{"company": RIVAL, "reason": "rival's budget"}]
    assert record["took_part"] == [OWN]  # who takes part is the job's, not a figure
    result = world.client.get(f"/jobs/{job}/result", headers=token_of(world, "rival")).json()
    assert set(result["result"]["companies"]) == {RIVAL}
    assert str(OWN_AUC) not in json.dumps(result)


def test_the_company_s_view_in_detail(world: World, job: str) -> None:
    result = world.client.get(f"/jobs/{job}/result", headers=world.headers("company")).json()
    shown: dict[str, Any] = result["result"]
    assert set(shown["companies"]) == {OWN}
    assert shown["assessment"]["companies"] == [{"company": OWN, "test_rows": 31}]
    assert shown["assessment"]["worst_company"] == "another company"
    assert shown["assessment"]["worst_company_gap"] == 0.0311  # the gate's job-level figure
    assert shown["contributions"]["companies"] == [{"company": OWN, "share": 0.4088}]
    assert shown["release"]["reasons"] == ["another company's AUC fell 0.0311 below its own"]


def test_a_reader_who_may_not_read_the_job_gets_nothing(world: World, job: str) -> None:
    for role in ("other_engineer", "other_company"):
        answer = world.client.get(f"/jobs/{job}/rounds", headers=world.headers(role))
        assert answer.status_code == 403


def test_the_event_stream_and_the_console_are_shaped_the_same_way(world: World, job: str) -> None:
    stream = world.client.get(f"/jobs/{job}/events", headers=world.headers("company"))
    [round_event] = [data for kind, data, _ in events(stream.text) if kind == "round"]
    assert rival_figures_in(json.dumps(round_event)) == []
    assert round_event["metrics"]["evaluation"]["companies"] == {OWN: {"auc": OWN_AUC}}
    page = world.client.get(f"/console/jobs/{job}", headers=world.headers("company"))
    assert page.status_code == 200 and "rival&#39;s budget" not in page.text
    assert "rival's budget" not in page.text
    full = world.client.get(f"/console/jobs/{job}", headers=world.headers("regulator"))
    assert full.status_code == 200 and "budget" in full.text


def test_the_cli_shows_each_reader_its_view_and_lists_jobs(world: World, job: str) -> None:
    from typer.testing import CliRunner

    from sandbox.cli import app
    from sandbox.registry.models import Release

    runs.store_release(world.gov.engine, Release(
        job_id=job, model_hash="ab" * 32, tier="low", allowed=False, decided_by="policy",
        reasons=[f"{RIVAL}'s AUC fell 0.0311 below its own"], assessment={},
    ))  # fmt: skip
    runner = CliRunner()
    own = runner.invoke(app, ["job", "show", job, "--as", OWN])
    assert own.exit_code == 0, own.output
    assert str(OWN_AUC) in own.output and str(RIVAL_AUC) not in own.output
    assert "another company's AUC fell" in own.output
    assert "the model was not released: it may not be used" in own.output
    full = runner.invoke(app, ["job", "show", job, "--as", "reg"])
    assert str(OWN_AUC) in full.output and str(RIVAL_AUC) in full.output
    listed = runner.invoke(app, ["job", "list", "--as", OWN])
    assert listed.exit_code == 0 and job in listed.output
    assert job in runner.invoke(app, ["job", "list", "--as", "eve"]).output
    assert job not in runner.invoke(app, ["job", "list", "--as", "mallory"]).output


# Who may open what, page by page: the console's pages and the report downloads answer each
# reader as the API does, and whatever a company may open holds no figure of its rival's.
VIEW_MATRIX = {
    # path:                         company rival other_company engineer other_engineer regulator operator
    "/console/jobs/{job}":           (200, 200, 403, 200, 403, 200, 200),
    "/console/jobs/{job}/report.json": (403, 403, 403, 403, 403, 200, 403),
    "/console/jobs/{job}/report.html": (403, 403, 403, 403, 403, 200, 403),
    "/jobs/{job}/compliance":        (403, 403, 403, 200, 403, 200, 200),
    "/jobs/{job}":                   (200, 200, 403, 200, 403, 200, 200),
    "/console/jobs":                 (200, 200, 200, 200, 200, 200, 200),
    "/console/audit?job={job}":      (200, 200, 200, 200, 403, 200, 200),
    "/console":                      (403, 403, 403, 403, 403, 200, 200),
    "/console/companies/" + OWN:     (200, 403, 403, 403, 403, 200, 403),
}  # fmt: skip
READERS = ("company", "rival", "other_company", "engineer", "other_engineer", "regulator",
           "operator")  # fmt: skip
COMPANIES = {"company": OWN, "rival": RIVAL}


@pytest.mark.parametrize("path", list(VIEW_MATRIX))
@pytest.mark.parametrize("reader", READERS)
def test_the_view_matrix(world: World, job: str, path: str, reader: str) -> None:
    answer = world.client.get(path.format(job=job), headers=token_of(world, reader))
    expected = VIEW_MATRIX[path][READERS.index(reader)]
    assert answer.status_code == expected, answer.text[:300]
    if expected == 200 and reader in COMPANIES:
        other = RIVAL if reader == "company" else OWN
        shown = answer.text.replace(" ", "")
        # The other company's own figures never show (its name may, as a participant).
        assert not [f for f in ((str(RIVAL_AUC), str(RIVAL_EPSILON), "0.5912") if other == RIVAL
                    else (str(OWN_AUC), "0.4088")) if f in shown], path  # fmt: skip
    if path == "/console/jobs":  # each lists what it filed or takes part in
        assert (job in answer.text) == (reader not in ("other_company", "other_engineer"))
