"""The authorization matrix: every role against every endpoint that needs a token.

For each pair the test makes the request and then finds the decision it caused in the ledger:
the policy action the endpoint names, by this principal, allowed or denied as the table below
says. The HTTP answer must agree: a denial is a 403 problem naming that decision, an allowed
request is served (or refused for the state of things, e.g. a job that is not running yet,
never with a 403). A request without a token is refused with 401 and decides nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from policies.policyset import DEFAULT_POLICY_DIR, policy_files
from sandbox import identity
from sandbox.data import census
from sandbox.registry.policy_sets import sign_policy_set
from sandbox.services import principals as principal_service
from tests.api.conftest import ROLES, World

ALL = frozenset(ROLES)
OVERSIGHT = frozenset({"regulator", "operator"})
STAFF = frozenset({"engineer", "other_engineer", "regulator", "operator"})
OWNER_AND_REGULATOR = frozenset({"company", "regulator"})
JOB_READERS = frozenset({"engineer", "company", "regulator", "operator"})


@dataclass(frozen=True)
class Endpoint:
    """One endpoint: how to call it (fresh objects made by ``prepare`` per call), the policy
    action it asks, who the policy allows, and what an allowed call answers."""

    method: str
    path: str
    action: str
    allowed: frozenset[str]
    prepare: Callable[[World, str], dict[str, Any]] = lambda world, role: {}
    body: Callable[[World, dict[str, Any]], Any] | None = None
    served: tuple[int, ...] = (200,)

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


def manifest(world: World, _: dict[str, Any]) -> dict[str, Any]:
    filled = census.manifest_for("Construction").model_dump(mode="json")
    name = "extra_" + hashlib.sha256(str(world.ledger_size).encode()).hexdigest()[:8]
    return {**filled, "name": name, "row_count": 10, "content_hash": "ab" * 32}


def policy_set(world: World, _: dict[str, Any]) -> dict[str, Any]:
    files = policy_files(DEFAULT_POLICY_DIR)
    regulator = identity.sandbox_key(world.settings.keys_dir, "regulator")
    return {
        "files": {name: data.decode("utf-8") for name, data in files.items()},
        "signature": sign_policy_set(regulator),
    }


def fresh_principal(world: World, role: str) -> dict[str, Any]:
    from policies.facts import OperatorFacts

    principal = f"p-{role.replace('_', '-')}-{world.ledger_size}"
    key = identity.public_b64(identity.generate_key())
    principal_service.register_principal(
        world.gov, OperatorFacts("operator"), principal, "engineer", key
    )
    return {"principal": principal}


def fresh_token_of_company(world: World, role: str) -> dict[str, Any]:
    from sandbox.services.principals import authenticate

    _, record = authenticate(world.gov, world.new_token("company"))
    return {"token_id": record.id}


def entry_about_company(world: World, role: str) -> dict[str, Any]:
    [first] = world.gov.ledger.entries(limit=1, company="construction")
    return {"index": first.index}


def settled_job(world: World, role: str) -> dict[str, Any]:
    """A completed job of construction and transportation, settled by the operator."""
    from policies.facts import OperatorFacts
    from sandbox.services import settlements
    from tests.api.test_views import completed_job

    job = completed_job(world)
    settlements.settle(world.gov, OperatorFacts("operator"), job, "100")
    return {"job": job}


def contested_job(world: World, role: str) -> dict[str, Any]:
    """A settled job whose statement construction contests."""
    from policies.facts import CompanyFacts
    from sandbox.services import settlements

    params = settled_job(world, role)
    contest = settlements.contest(world.gov, CompanyFacts(id="construction", industry="Construction"),
                                  params["job"], "the metering")  # fmt: skip
    return {**params, "dispute": contest.id}


def fresh_completed_job(world: World, role: str) -> dict[str, Any]:
    from tests.api.test_views import completed_job

    return {"job": completed_job(world)}


def held_job(world: World, role: str) -> dict[str, Any]:
    """An approved job whose model the release gate held for a regulator's review."""
    from sandbox.services import jobs as job_service
    from tests.support.world import hold_for_review

    job = world.awaiting_job()
    job_service.approve_as_installation_regulator(world.gov, job, "approved")
    hold_for_review(world.gov.engine, job)
    return {"job": job}


def review(world: World, params: dict[str, Any]) -> dict[str, Any]:
    """A rejection of the held model's release, signed with the regulator's key."""
    from sandbox.services import releases
    from sandbox.utc import rfc3339, utcnow

    now, note = rfc3339(utcnow()), "too few positives"
    statement = releases.review_statement(params["job"], "ab" * 32, "reg", False, now, note)
    signature = identity.sign(world.keys["reg"], statement)
    return {"approve": False, "note": note, "signed_at": now, "signature": signature}


ENDPOINTS = [
    Endpoint(
        "GET",
        "/releases/{job}/review-statement?approve=true",
        "read_job",
        JOB_READERS,
        prepare=held_job,
    ),
    Endpoint(
        "POST",
        "/releases/{job}/review",
        "review_release",
        frozenset({"regulator"}),
        prepare=held_job,
        body=review,
    ),
    Endpoint("GET", "/companies", "read_registry", STAFF),
    Endpoint("GET", "/companies/construction", "read_company_data", OWNER_AND_REGULATOR),
    Endpoint("GET", "/companies/construction/datasets", "read_company_data", OWNER_AND_REGULATOR),
    Endpoint("GET", "/companies/construction/consents", "read_company_data", OWNER_AND_REGULATOR),
    Endpoint("GET", "/companies/construction/receipts", "read_company_data", OWNER_AND_REGULATOR),
    Endpoint("GET", "/companies/construction/refusals", "read_company_data", OWNER_AND_REGULATOR),
    Endpoint(
        "POST",
        "/companies/construction/refusals",
        "report_refusal",
        frozenset({"company"}),
        body=lambda w, p: w.refusal_notices("construction"),
        served=(201,),
    ),
    Endpoint(
        "GET",
        "/approvals/{job}/statement",
        "read_job",
        JOB_READERS,
        prepare=lambda w, r: {"job": w.awaiting_job()},
    ),
    Endpoint(
        "GET", "/companies/construction/privacy-spend", "read_company_data", OWNER_AND_REGULATOR
    ),
    Endpoint(
        "POST",
        "/companies/construction/datasets",
        "register_dataset",
        frozenset({"company"}),
        body=manifest,
        served=(201,),
    ),
    Endpoint(
        "POST",
        "/companies/construction/consents",
        "grant_consent",
        frozenset({"company"}),
        body=lambda w, p: {"dataset": "census", "purpose": "fraud-model"},
        served=(201,),
    ),
    Endpoint(
        "POST",
        "/companies/construction/consents/{consent}/revoke",
        "revoke_consent",
        frozenset({"company"}),
        prepare=lambda w, role: {"consent": w.new_consent()},
        body=lambda w, p: {"reason": "no longer wanted"},
    ),
    Endpoint(
        "POST",
        "/jobs",
        "submit_job",
        frozenset({"engineer", "other_engineer"}),
        body=lambda w, p: w.spec(["construction", "transportation"]).model_dump(mode="json"),
        served=(201,),
    ),
    Endpoint("GET", "/jobs?engineer=eve", "list_jobs", frozenset({"engineer"}) | OVERSIGHT),
    Endpoint("GET", "/jobs?company=construction", "list_jobs", frozenset({"company"}) | OVERSIGHT),
    Endpoint("GET", "/approvals", "list_jobs", OVERSIGHT),
    Endpoint(
        "GET",
        "/jobs/{job}",
        "read_job",
        JOB_READERS,
        prepare=lambda w, r: {"job": w.admitted_job()},
    ),
    Endpoint(
        "GET",
        "/jobs/{job}/rounds",
        "read_job",
        JOB_READERS,
        prepare=lambda w, r: {"job": w.admitted_job()},
    ),
    Endpoint(
        "GET",
        "/jobs/{job}/result",
        "read_job",
        JOB_READERS,
        prepare=lambda w, r: {"job": w.admitted_job()},
        served=(409,),  # no result before it ran
    ),
    Endpoint(
        "GET",
        "/jobs/{job}/events",
        "read_job",
        JOB_READERS,
        prepare=lambda w, r: {"job": w.admitted_job()},
    ),
    Endpoint(
        "POST",
        "/jobs/{job}/start",
        "start_job",
        frozenset({"engineer"}),
        prepare=lambda w, r: {"job": w.admitted_job()},
        served=(409,),  # this server runs no jobs (capacity 0): allowed, then refused
    ),
    Endpoint(
        "POST",
        "/approvals/{job}/approve",
        "approve_job",
        frozenset({"regulator"}),
        prepare=lambda w, r: {"job": w.awaiting_job()},
        body=lambda w, p: w.approval(p["job"], "reviewed"),
    ),
    Endpoint(
        "POST",
        "/approvals/{job}/reject",
        "reject_job",
        frozenset({"regulator"}),
        prepare=lambda w, r: {"job": w.awaiting_job()},
        body=lambda w, p: {"reason": "the purpose is too broad"},
    ),
    Endpoint(
        "GET",
        "/jobs/{job}/compliance",
        "read_audit",
        frozenset({"engineer"}) | OVERSIGHT,
        prepare=lambda w, r: {"job": w.admitted_job()},
    ),
    Endpoint("GET", "/audit/entries", "read_audit", OVERSIGHT),
    Endpoint(
        "GET",
        "/audit/entries?company=construction",
        "read_audit",
        frozenset({"company"}) | OVERSIGHT,
    ),
    Endpoint(
        "GET",
        "/audit/entries/{index}?company=construction",
        "read_audit",
        frozenset({"company"}) | OVERSIGHT,
        prepare=entry_about_company,
    ),
    Endpoint(
        "GET",
        "/audit/entries?job={job}",
        "read_audit",
        frozenset({"engineer"}) | OVERSIGHT,
        prepare=lambda w, r: {"job": w.admitted_job()},
    ),
    Endpoint("GET", "/audit/checkpoint", "read_audit", OVERSIGHT),
    Endpoint("GET", "/audit/consistency?old_size=1&new_size=2", "read_audit", OVERSIGHT),
    Endpoint("POST", "/audit/verify", "read_audit", OVERSIGHT),
    Endpoint("GET", "/audit/witnesses", "read_audit", OVERSIGHT),
    Endpoint("GET", "/applications", "review_application", OVERSIGHT),
    Endpoint(
        "POST",
        "/applications/{application}/admit",
        "review_application",
        OVERSIGHT,
        prepare=lambda w, r: {"application": w.application()},
    ),
    Endpoint(
        "POST",
        "/applications/{application}/refuse",
        "review_application",
        OVERSIGHT,
        prepare=lambda w, r: {"application": w.application()},
        body=lambda w, p: {"reason": "no processing agreement"},
    ),
    Endpoint(
        "POST",
        "/audit/cosignatures",
        "witness_checkpoint",
        frozenset({"company", "other_company", "regulator"}),
        prepare=lambda w, role: w.cosignature(role),
        body=lambda w, p: p,
        served=(201,),
    ),
    Endpoint("GET", "/operator/principals", "read_registry", STAFF),
    Endpoint("GET", "/operator/policy-set", "read_registry", STAFF),
    Endpoint(
        "POST",
        "/operator/principals",
        "register_principal",
        frozenset({"operator"}),
        body=lambda w, p: {
            "id": f"new-{w.ledger_size}",
            "role": "engineer",
            "public_key": identity.public_b64(identity.generate_key()),
        },
        served=(201,),
    ),
    Endpoint(
        "POST",
        "/operator/principals/{principal}/disable",
        "register_principal",
        frozenset({"operator"}),
        prepare=fresh_principal,
    ),
    Endpoint(
        "POST", "/operator/policy-set", "activate_policy", frozenset({"operator"}), body=policy_set
    ),
    Endpoint("GET", "/auth/tokens", "manage_tokens", ALL),
    Endpoint(
        "POST",
        "/companies/construction/vouchers",
        "issue_voucher",
        frozenset({"operator", "regulator"}),
        body=lambda w, p: {"amount": "0.10", "purpose": "a small firm"},
        served=(201,),
    ),
    Endpoint("GET", "/companies/construction/vouchers", "read_company_data", OWNER_AND_REGULATOR),
    Endpoint(
        "POST",
        "/jobs/{job}/settlement",
        "settle_job",
        frozenset({"engineer", "operator"}),
        prepare=fresh_completed_job,
        body=lambda w, p: {"value": "1000"},
        served=(201,),
    ),
    Endpoint("GET", "/jobs/{job}/settlement", "read_job", JOB_READERS, prepare=settled_job),
    Endpoint("GET", "/jobs/{job}/settlement.csv", "read_job", JOB_READERS, prepare=settled_job),
    Endpoint(
        "POST",
        "/jobs/{job}/settlement/disputes",
        "contest_settlement",
        frozenset({"company"}),
        prepare=settled_job,
        body=lambda w, p: {"reason": "the metering"},
        served=(201,),
    ),
    Endpoint(
        "POST",
        "/jobs/{job}/settlement/disputes/{dispute}/resolve",
        "resolve_dispute",
        frozenset({"operator", "regulator"}),
        prepare=contested_job,
        body=lambda w, p: {"outcome": "rejected", "note": "the receipts agree"},
    ),
    Endpoint(
        "GET",
        "/auth/tokens?role=company&principal_id=construction",
        "manage_tokens",
        frozenset({"company", "operator"}),
    ),
    Endpoint(
        "DELETE",
        "/auth/tokens/{token_id}",
        "manage_tokens",
        frozenset({"company", "operator"}),
        prepare=fresh_token_of_company,
    ),
]


def call(world: World, endpoint: Endpoint, role: str, token: str | None) -> tuple[Any, int]:
    """The response, and the ledger's size just before the request (after the set-up)."""
    params = endpoint.prepare(world, role)
    url = endpoint.path.format(**params)
    kwargs: dict[str, Any] = {}
    if endpoint.body is not None:
        kwargs["json"] = endpoint.body(world, params)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    world.client.cookies.clear()
    before = world.ledger_size
    return world.client.request(endpoint.method, url, headers=headers, **kwargs), before


CASES = [(e, role) for e in ENDPOINTS for role in ROLES]


@pytest.mark.parametrize(
    ("endpoint", "role"), CASES, ids=[f"{e.label}-{role}" for e, role in CASES]
)
def test_every_role_against_every_endpoint(world: World, endpoint: Endpoint, role: str) -> None:
    response, before = call(world, endpoint, role, world.token(role))
    kind, principal = ROLES[role]
    decisions = [
        d
        for d in world.decisions_since(before)
        if d["action"] == f"decision.{endpoint.action}" and d["actor"]["principal"] == principal
    ]
    assert decisions, f"{endpoint.label} as {role}: no {endpoint.action} decision recorded"
    decision = decisions[-1]
    expected = role in endpoint.allowed
    assert decision["actor"]["role"] == kind
    assert decision["decision"]["allowed"] is expected, (endpoint.label, role, response.text)
    if expected:
        assert response.status_code in endpoint.served, response.text
        assert decision["decision"]["policies"], "an allowed request names the permits"
    else:
        assert response.status_code == 403, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["decision_id"] == decision["decision"]["decision_id"]
        assert problem["reasons"] and problem["type"] == "urn:sandbox:problem:denied-by-policy"


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.label for e in ENDPOINTS])
def test_without_a_token_nothing_is_decided(world: World, endpoint: Endpoint) -> None:
    response, before = call(world, endpoint, "engineer", None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["title"] == "Not authenticated"
    assert world.decisions_since(before) == []


def test_the_matrix_covers_every_route_that_needs_a_token(world: World) -> None:
    document = world.client.get("/openapi.json").json()
    secured = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if operation.get("security")
    }
    covered = {(e.method, _template(e.path)) for e in ENDPOINTS}
    # The browser session endpoints are exercised in test_tokens.py.
    assert secured - covered == {("DELETE", "/auth/session")}


def _template(path: str) -> str:
    names = {
        "construction": "{company_id}",
        "{consent}": "{consent_id}",
        "{job}": "{job_id}",
        "{principal}": "{principal_id}",
        "{application}": "{application_id}",
        "{dispute}": "{dispute_id}",
    }
    bare = path.split("?")[0]
    parts = []
    for part in bare.split("/"):
        parts.append(names.get(part, part))
    return "/".join(parts)
