"""Errors are RFC 9457 problem details a person can act on; bad input never yields a 5xx and
never leaves anything written."""

from __future__ import annotations

import json

import pytest
from sqlmodel import Session, func, select

from sandbox.registry.models import Consent, Job
from tests.api.conftest import World

FIELDS = {"type", "title", "status", "detail", "instance"}


def assert_problem(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert set(problem) >= FIELDS
    assert problem["status"] == status and problem["type"].startswith("urn:sandbox:problem:")
    assert problem["detail"] and "Traceback" not in problem["detail"]
    return problem


def test_not_authenticated(world: World) -> None:
    problem = assert_problem(world.client.get("/approvals"), 401)
    assert "Authorization: Bearer" in problem["detail"] and problem["instance"] == "/approvals"


def test_denied_by_policy_names_the_decision_and_why(world: World) -> None:
    problem = assert_problem(world.client.get("/approvals", headers=world.headers("engineer")), 403)
    assert problem["type"] == "urn:sandbox:problem:denied-by-policy"
    assert problem["decision_id"] in problem["detail"] and problem["reasons"]


def test_not_found(world: World) -> None:
    problem = assert_problem(
        world.client.get("/jobs/job-000000000000", headers=world.headers("regulator")), 404
    )
    assert "job-000000000000" in problem["detail"]
    assert_problem(world.client.get("/no/such/path"), 404)


def test_conflict(world: World) -> None:
    job = world.admitted_job()
    problem = assert_problem(
        world.client.post(
            f"/approvals/{job}/approve",
            json=world.approval(job),
            headers=world.headers("regulator"),
        ),
        409,
    )
    assert "not awaiting approval" in problem["detail"]


def test_validation_names_every_field_at_fault(world: World) -> None:
    spec = world.spec(["construction", "transportation"]).model_dump(mode="json")
    spec |= {"rounds": 0, "privacy": {"dp": {"epsilon": -1}}, "surprise": True}
    problem = assert_problem(
        world.client.post("/jobs", json=spec, headers=world.headers("engineer")), 422
    )
    locations = {e["location"] for e in problem["errors"]}
    assert {"body.rounds", "body.privacy.dp.epsilon", "body.surprise"} <= locations
    assert "body.rounds" in problem["detail"]


def test_method_not_allowed_lists_the_methods(world: World) -> None:
    response = world.client.put("/auth/session")
    assert_problem(response, 405)
    assert set(response.headers["allow"].split(", ")) == {"POST", "DELETE"}


@pytest.mark.parametrize(
    "body",
    [
        '{"dataset": "census", "purpose": "a\\u0000b"}',
        '{"dataset": "census", "purpose": "\\ud800"}',
        '{"dataset": "census", "purpose": "churn", "valid_days": 1e400}',
        '{"dataset": "census", "purpose": "churn", "valid_days": NaN}',
        '{"dataset": "census", "purpose": "churn", "valid_days": 99999999999999999999}',
        '{"dataset": "census", "purpose": "churn", "valid_days": ' + "9" * 5000 + "}",
        "[" * 5000 + "]" * 5000,
        '{"dataset": "census", "purpose": "Ünïcode-ß"}',
        '{"dataset": "census", "purpose": "' + "p" * 10_000 + '"}',
        "not json",
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(world: World, body: str) -> None:
    with Session(world.gov.engine) as session:
        consents = session.exec(select(func.count()).select_from(Consent)).one()
    response = world.client.post(
        "/companies/construction/consents",
        content=body.encode("utf-8", "surrogatepass"),
        headers={**world.headers("company"), "Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/problem+json"
    with Session(world.gov.engine) as session:
        assert session.exec(select(func.count()).select_from(Consent)).one() == consents


def test_a_body_too_large_is_refused_before_it_is_read(world: World) -> None:
    spec = world.spec(["construction", "transportation"]).model_dump(mode="json")
    spec["description"] = "x" * (2 << 20)
    response = world.client.post(
        "/jobs",
        content=json.dumps(spec),
        headers={**world.headers("engineer"), "Content-Type": "application/json"},
    )
    problem = assert_problem(response, 413)
    assert "larger than" in problem["detail"]


def test_a_refused_filing_is_on_record_as_denied(world: World) -> None:
    """A job whose admission is denied is filed as denied: its id is in the problem, and the
    engineer reads the decision and its reasons on the job."""
    spec = world.spec(["construction", "transportation"], privacy={"secure_aggregation": False})
    with Session(world.gov.engine) as session:
        jobs = session.exec(select(func.count()).select_from(Job)).one()
    problem = assert_problem(
        world.client.post(
            "/jobs", json=spec.model_dump(mode="json"), headers=world.headers("engineer")
        ),
        403,
    )
    assert "tier.low.personal_data_needs_dp" not in problem["detail"]  # reasons, not ids
    job = world.client.get(f"/jobs/{problem['job_id']}", headers=world.headers("engineer")).json()
    assert job["status"] == "denied" and job["admission"]["allowed"] is False
    assert "tier.low.personal_data_needs_dp" in job["admission"]["policies"]
    assert job["admission"]["reasons"] == problem["reasons"]
    with Session(world.gov.engine) as session:
        assert session.exec(select(func.count()).select_from(Job)).one() == jobs + 1
