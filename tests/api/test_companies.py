"""Companies over the API: a signed join with a manifest its own node filled in (never rows),
datasets, consents, receipts and privacy spend; and the wall between companies: no company
reads or changes another's data, every attempt is denied by policy and recorded where the
other company can see it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from sandbox.data import census
from sandbox.identity.requests import join_request, sign_token_request
from sandbox.node.home import NodeHome
from sandbox.node.onboarding import prepare_node
from sandbox.registry.models import Company, Consent, Dataset
from tests.api.conftest import World


def prepared(world: World, company_id: str, industry: str, tmp: Path | None = None):  # type: ignore[no-untyped-def]
    node_dir = tmp or world.settings.company_dir(company_id)
    return prepare_node(node_dir, company_id, census.company_table(industry, rows=40, seed=3))


def post_join(world: World, body: bytes, signature: str | None):  # type: ignore[no-untyped-def]
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Sandbox-Signature"] = signature
    return world.client.post("/companies", content=body, headers=headers)


def test_a_company_applies_is_admitted_and_gets_a_token(world: World) -> None:
    key, manifest = prepared(world, "mining", "Mining", world.settings.home / "mining-node")
    body, signature = join_request(key, "mining", "Mining Co", "Mining", manifest, ("churn",))
    response = post_join(world, body, signature)
    assert response.status_code == 202, response.text
    received = response.json()
    assert received["status"] == "received" and [c["purpose"] for c in received["consents"]] == [
        "churn"
    ]
    # Before admission: not in the registry, no token, nothing to act with.
    with Session(world.gov.engine) as session:
        assert session.get(Company, "mining") is None
    early = world.client.post("/auth/token", json=sign_token_request(key, "company", "mining"))
    assert early.status_code == 401
    pending = world.client.get("/applications", headers=world.headers("operator")).json()
    [application] = [a for a in pending if a["company_id"] == "mining"]
    assert application["consents"] == received["consents"]
    admitted = world.client.post(
        f"/applications/{application['id']}/admit", headers=world.headers("operator")
    )
    assert admitted.status_code == 200 and admitted.json()["status"] == "admitted", admitted.text
    actions = [json.loads(e.entry)["action"] for e in world.gov.ledger.entries(company="mining")]
    assert {
        "decision.join",
        "company.applied",
        "decision.review_application",
        "company.joined",
        "dataset.registered",
        "consent.granted",
        "company.admitted",
    } <= set(actions)
    token = world.client.post(
        "/auth/token", json=sign_token_request(key, "company", "mining")
    ).json()["token"]
    datasets = world.client.get(
        "/companies/mining/datasets", headers={"Authorization": f"Bearer {token}"}
    )
    assert datasets.status_code == 200 and datasets.json()[0]["name"] == "census"
    # The consents registered are those the application proposed (and the node recorded).
    consents = world.client.get(
        "/companies/mining/consents", headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert [c["id"] for c in consents] == [c["id"] for c in received["consents"]]
    again = world.client.post(
        f"/applications/{application['id']}/admit", headers=world.headers("operator")
    )
    assert again.status_code == 409


def test_an_impostor_learns_nothing_and_takes_no_id(world: World, tmp_path: Path) -> None:
    """Ids of companies, of other principals and reserved names: the same answer as a free
    id, nothing kept, and the refusal in the ledger."""
    key, manifest = prepared(world, "impostor", "Mining", tmp_path / "node")
    answers = {}
    for taken in ("reg", "operator", "construction", "regulator", "free-id-1"):
        body, signature = join_request(key, taken, "Impostor", "Mining", manifest, ("churn",))
        before = world.ledger_size
        answer = post_join(world, body, signature)
        assert answer.status_code == 202, answer.text
        answers[taken] = {k: v for k, v in answer.json().items() if k != "consents"}
        decisions = world.decisions_since(before)
        assert decisions[-1]["decision"]["allowed"] is (taken == "free-id-1")
    assert len({json.dumps(a, sort_keys=True) for a in answers.values()}) == 1
    pending = world.client.get("/applications", headers=world.headers("operator")).json()
    assert {a["company_id"] for a in pending} & {"reg", "operator", "construction"} == set()
    assert "free-id-1" in {a["company_id"] for a in pending}


def test_important_data_waits_for_a_regulator_and_a_refusal_is_kept(
    world: World, tmp_path: Path
) -> None:
    key, manifest = prepared(world, "utilities", "Utilities and sanitary services", tmp_path / "n")
    manifest = manifest.model_copy(update={"grade": "important"})
    body, signature = join_request(
        key, "utilities", "Utility", "Utilities and sanitary services", manifest, ("churn",)
    )
    assert post_join(world, body, signature).status_code == 202
    pending = world.client.get("/applications", headers=world.headers("regulator")).json()
    [application] = [a for a in pending if a["company_id"] == "utilities"]
    path = f"/applications/{application['id']}"
    first = world.client.post(f"{path}/admit", headers=world.headers("operator"))
    assert first.status_code == 403 and "a regulator admits it before" in first.json()["detail"]
    for role in ("engineer", "company"):
        assert world.client.post(f"{path}/admit", headers=world.headers(role)).status_code == 403
    by_regulator = world.client.post(f"{path}/admit", headers=world.headers("regulator"))
    assert by_regulator.status_code == 200 and by_regulator.json()["status"] == "pending"
    assert by_regulator.json()["regulator_admitted_by"] == "reg"
    refused = world.client.post(
        f"{path}/refuse", json={"reason": "no processing agreement"},
        headers=world.headers("operator"),
    )  # fmt: skip
    assert refused.status_code == 200 and refused.json()["reason"] == "no processing agreement"
    assert world.client.post(f"{path}/admit", headers=world.headers("operator")).status_code == 409
    with Session(world.gov.engine) as session:
        assert session.get(Company, "utilities") is None


def test_a_signed_request_to_join_serves_once(world: World, tmp_path: Path) -> None:
    key, manifest = prepared(world, "once", "Mining", tmp_path / "node")
    body, signature = join_request(key, "once", "Once", "Mining", manifest, ())
    assert post_join(world, body, signature).status_code == 202
    assert post_join(world, body, signature).status_code == 409


@pytest.mark.parametrize("case", ["unsigned", "another key", "body changed", "stale"])
def test_a_join_must_be_signed_by_the_key_it_registers(
    world: World, tmp_path: Path, case: str
) -> None:
    key, manifest = prepared(world, "agriculture", "Agriculture", tmp_path / "node")
    now = datetime.now(UTC) - timedelta(minutes=10) if case == "stale" else None
    body, signature = join_request(key, "agriculture", "Farm", "Agriculture", manifest, now=now)
    if case == "another key":
        _, signature = join_request(
            NodeHome(world.settings.company_dir("construction")).key(), "x", "x", "x"
        )
    elif case == "body changed":
        body = body.replace(b'"Farm"', b'"Farms"')
    response = post_join(world, body, None if case == "unsigned" else signature)
    assert response.status_code == 401, response.text
    with Session(world.gov.engine) as session:
        assert session.get(Company, "agriculture") is None


@pytest.mark.parametrize("case", ["no counts", "industry differs", "consent without data"])
def test_a_bad_join_leaves_nothing_behind(world: World, tmp_path: Path, case: str) -> None:
    company_id = "forestry"
    key, manifest = prepared(world, company_id, "Forestry and fisheries", tmp_path / "node")
    industry = "Forestry and fisheries"
    purposes: tuple[str, ...] = ("churn",)
    if case == "no counts":
        manifest = manifest.model_copy(update={"row_count": None, "content_hash": None})
    elif case == "industry differs":
        industry = "Mining"
    elif case == "consent without data":
        manifest = None  # type: ignore[assignment]
    before = world.ledger_size
    body, signature = join_request(key, company_id, "Fish", industry, manifest, purposes)
    response = post_join(world, body, signature)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    with Session(world.gov.engine) as session:
        assert session.get(Company, company_id) is None
        assert not session.exec(select(Dataset).where(Dataset.company_id == "forestry")).all()
    records = [json.loads(e.entry) for e in world.gov.ledger.entries(after_index=before - 1)]
    assert not [r for r in records if r["action"] in ("company.joined", "company.applied")]


def test_consents_are_granted_and_revoked_in_registry_ledger_and_node(world: World) -> None:
    headers = world.headers("company")
    granted = world.client.post(
        "/companies/construction/consents",
        json={"dataset": "census", "purpose": "demand-forecast", "valid_days": 30},
        headers=headers,
    )
    assert granted.status_code == 201, granted.text
    consent = granted.json()
    assert consent["state"] == "live"
    node = NodeHome(world.settings.company_dir("construction"))
    assert any(c.consent_id == consent["id"] and c.revoked_at is None for c in node.consents())
    revoked = world.client.post(
        f"/companies/construction/consents/{consent['id']}/revoke",
        json={"reason": "the project ended"},
        headers=headers,
    )
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert any(c.consent_id == consent["id"] and c.revoked_at for c in node.consents())
    again = world.client.post(
        f"/companies/construction/consents/{consent['id']}/revoke", json={}, headers=headers
    )
    assert again.status_code == 409
    listed = world.client.get("/companies/construction/consents", headers=headers).json()
    assert {c["id"]: c["state"] for c in listed}[consent["id"]] == "revoked"


def test_receipts_and_privacy_spend_start_empty_and_page(world: World) -> None:
    headers = world.headers("company")
    receipts = world.client.get("/companies/construction/receipts?limit=5", headers=headers)
    assert receipts.status_code == 200 and receipts.json() == {"receipts": [], "next_after": None}
    spend = world.client.get("/companies/construction/privacy-spend", headers=headers).json()
    assert spend == {
        "company_id": "construction",
        "jobs": [],
        "by_purpose": {},
        "total_epsilon": 0.0,
    }


READS = ["", "/datasets", "/consents", "/receipts", "/privacy-spend"]


@pytest.mark.parametrize("view", READS)
def test_a_company_never_reads_another_companys_data(world: World, view: str) -> None:
    before = world.ledger_size
    response = world.client.get(
        f"/companies/construction{view}", headers=world.headers("other_company")
    )
    assert response.status_code == 403
    problem = response.json()
    assert "may read only its own data" in problem["detail"]
    [decision] = world.decisions_since(before)
    assert decision["actor"]["principal"] == "retail-trade"
    assert decision["resource"]["owner"] == "construction"
    assert decision["decision"]["policies"] == ["baseline.company.own_company_data"]
    # The company whose data was asked for sees the attempt in its own audit entries.
    entries = world.client.get(
        f"/audit/entries?company=construction&after={before - 1}",
        headers=world.headers("company"),
    ).json()["entries"]
    assert any(e["record"]["decision"]["decision_id"] == problem["decision_id"] for e in entries)


def test_a_company_never_changes_another_companys_consents(world: World) -> None:
    consent = world.new_consent()
    other = world.headers("other_company")
    revoke = world.client.post(
        f"/companies/construction/consents/{consent}/revoke", json={}, headers=other
    )
    assert revoke.status_code == 403
    grant = world.client.post(
        "/companies/construction/consents", json={"purpose": "spam"}, headers=other
    )
    assert grant.status_code == 403
    register = world.client.post(
        "/companies/construction/datasets",
        json=census.manifest_for("Construction").model_dump(mode="json")
        | {"name": "mine", "row_count": 5, "content_hash": "0" * 64},
        headers=other,
    )
    assert register.status_code == 403
    with Session(world.gov.engine) as session:
        row = session.get(Consent, consent)
        assert row is not None and row.revoked_at is None
        assert session.get(Dataset, "construction/mine") is None


def test_asking_for_what_is_not_there_reveals_nothing_to_others(world: World) -> None:
    """Another company learns nothing from probing: denied (and recorded), not 'not found'."""
    body = {"dataset": "secret_project", "purpose": "churn"}
    own = world.client.post(
        "/companies/construction/consents", json=body, headers=world.headers("company")
    )
    assert own.status_code == 404
    other = world.client.post(
        "/companies/construction/consents", json=body, headers=world.headers("other_company")
    )
    assert other.status_code == 403
    probe = world.client.post(
        "/companies/construction/consents/consent-000000000000/revoke",
        json={},
        headers=world.headers("other_company"),
    )
    assert probe.status_code == 403


def test_whether_something_exists_is_told_only_to_whom_the_policy_allows(world: World) -> None:
    """Ids that name nothing: a principal the policy would deny learns nothing (403, recorded);
    one it would allow is told there is nothing (404)."""
    cases = [
        ("GET", "/companies/globex", None, "other_company", "regulator"),
        ("GET", "/companies/globex/receipts", None, "engineer", "regulator"),
        ("POST", "/companies/globex/consents", {"purpose": "churn"}, "other_company", None),
        ("GET", "/auth/tokens?role=engineer&principal_id=nobody", None, "company", "operator"),
        ("POST", "/operator/principals/nobody/disable", None, "company", "operator"),
    ]
    for method, path, body, denied, allowed in cases:
        refused = world.client.request(method, path, json=body, headers=world.headers(denied))
        assert refused.status_code == 403, (path, refused.text)
        if allowed is not None:
            told = world.client.request(method, path, json=body, headers=world.headers(allowed))
            assert told.status_code == 404, (path, told.text)
