"""A sandbox with companies, principals and tokens, and the API in front of it.

The world is built once per test module (joining companies reads census data and writes their
vaults, which takes seconds): four companies (one with important-grade data, so that its jobs
wait for a regulator), two engineers, a regulator and the operator, each with a token. Tests
that change something make their own objects (a new job, consent, token) so that they do not
depend on each other's order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from policies.facts import EngineerFacts, OperatorFacts
from sandbox import identity
from sandbox.api import create_app
from sandbox.api.events import StreamLimits
from sandbox.config import Settings
from sandbox.data import census
from sandbox.data.validation import validate_frame
from sandbox.governance import Governance, get_governance
from sandbox.identity.requests import join_request
from sandbox.ledger.witness import cosign
from sandbox.node.home import NodeHome
from sandbox.node.refusals import refuse
from sandbox.protocol.jobspec import JobSpec
from sandbox.services import applications as application_service
from sandbox.services import companies as company_service
from sandbox.services import consents as consent_service
from sandbox.services import jobs as job_service
from sandbox.services import principals as principal_service
from sandbox.utc import rfc3339, utcnow
from sandbox.vocabulary import OPERATOR_ID
from tests.conftest import isolated_home

PURPOSE = "income-prediction"
INDUSTRIES = {
    "construction": ("Construction", "general"),
    "transportation": ("Transportation", "general"),
    "retail-trade": ("Retail trade", "general"),
    "wholesale-trade": ("Wholesale trade", "important"),
}
PRINCIPALS = {"eve": "engineer", "mallory": "engineer", "reg": "regulator"}
# Who plays each role in the tests. "company" owns the data the tests ask about and takes
# part in the engineer's jobs; "other_company" does neither; "engineer" filed the jobs.
ROLES = {
    "company": ("company", "construction"),
    "other_company": ("company", "retail-trade"),
    "engineer": ("engineer", "eve"),
    "other_engineer": ("engineer", "mallory"),
    "regulator": ("regulator", "reg"),
    "operator": ("operator", OPERATOR_ID),
}


@dataclass
class World:
    settings: Settings
    app: FastAPI
    client: TestClient
    keys: dict[str, Any] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def gov(self) -> Governance:
        return get_governance(self.settings)

    def token(self, role: str) -> str:
        """The token of a role of ROLES."""
        return self.tokens[role]

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role)}"}

    def new_token(self, role: str, **ttl: Any) -> str:
        kind, principal = ROLES[role]
        return principal_service.issue_token_locally(self.gov, kind, principal, **ttl).token

    def spec(self, companies: list[str], **fields: Any) -> JobSpec:
        return JobSpec.model_validate(
            {
                "purpose": PURPOSE,
                "companies": companies,
                "rounds": 2,
                "local_epochs": 1,
                "min_participants": 2,
                "privacy": {"dp": {"epsilon": 2.0}},
                **fields,
            }
        )

    def admitted_job(self) -> str:
        filed = job_service.file_job(
            self.gov, self.spec(["construction", "transportation"]), EngineerFacts("eve")
        )
        assert filed.job.status == "admitted", filed.reasons
        return filed.job.id

    def awaiting_job(self) -> str:
        filed = job_service.file_job(
            self.gov, self.spec(["construction", "wholesale-trade"]), EngineerFacts("eve")
        )
        assert filed.job.status == "awaiting_approval", filed.reasons
        return filed.job.id

    def approval(self, job: str, note: str = "checked", principal: str = "reg") -> dict[str, str]:
        """An approval body signed with ``principal``'s key (as its own machine would)."""
        signed_at = rfc3339(utcnow())
        statement = job_service.approval_statement(self.gov, job, principal, signed_at, note)
        signature = identity.sign(self.keys[principal], statement)
        return {"note": note, "signed_at": signed_at, "signature": signature}

    def refusal_notices(self, company: str) -> dict[str, list[dict[str, str]]]:
        """A fresh signed notice of a refusal by ``company``'s node, as the API takes it."""
        signed = refuse(NodeHome(self.settings.company_dir(company)), "test", "a test", "train")
        return {"notices": [{"payload": signed.text, "signature": signed.signature}]}

    def witness_key(self, role: str) -> Any:
        """The key a role's principal witnesses the ledger with (a company's is its node's)."""
        kind, principal = ROLES[role]
        if kind == "company":
            return NodeHome(self.settings.company_dir(principal)).key()
        return self.keys.get(principal) or identity.generate_key()

    def cosignature(self, role: str, signed: Any = None) -> dict[str, Any]:
        """A cosignature by ``role``'s principal of ``signed`` (by default the ledger's latest
        checkpoint), as ``POST /audit/cosignatures`` takes it."""
        signed = signed or self.gov.ledger.checkpoint()
        body = signed.note[: signed.note.rfind("\n\n") + 1]
        line = cosign(body, self.witness_key(role), ROLES[role][1], int(time.time()))
        return {"size": signed.size, "cosignature": line}

    def application(self, personal_data: bool = True) -> str:
        """A fresh pending application to join (a new company id and key, a manifest of
        general data), received through ``POST /companies``."""
        company_id = f"applicant-{self.ledger_size}"
        key = identity.generate_key()
        manifest = census.manifest_for("Mining").model_copy(
            update={"row_count": 40, "content_hash": "ab" * 32, "personal_data": personal_data}
        )
        body, signature = join_request(key, company_id, company_id, "Mining", manifest, ())
        answer = self.client.post(
            "/companies",
            content=body,
            headers={"Content-Type": "application/json", "X-Sandbox-Signature": signature},
        )
        assert answer.status_code == 202, answer.text
        found = application_service.list_applications(self.gov, OperatorFacts(OPERATOR_ID))
        return next(a.id for a in found if a.company_id == company_id)

    def new_consent(self, company: str = "construction", purpose: str = "fraud-model") -> str:
        return consent_service.grant_consent(self.gov, company, "census", purpose).id

    @property
    def ledger_size(self) -> int:
        return self.gov.ledger.size

    def decisions_since(self, size: int) -> list[dict[str, Any]]:
        """The decision records appended from ledger index ``size`` on."""
        entries = self.gov.ledger.entries(after_index=size - 1, limit=1000)
        records = [json.loads(e.entry) for e in entries]
        return [r for r in records if r.get("decision") is not None]


def join_census(gov: Governance, settings: Settings, company_id: str) -> None:
    industry, grade = INDUSTRIES[company_id]
    table = validate_frame(
        census.industry_frame(industry, rows=60, seed=1), census.manifest_for(industry, grade)
    )
    company_service.join(
        gov, settings.company_dir(company_id), company_id, industry, table, (PURPOSE,)
    )


def build_world(home: Path, settings: Settings, **app_options: Any) -> Iterator[World]:
    options = {
        "run_capacity": 0,
        "stream_limits": StreamLimits(poll_seconds=0.05, keepalive=0.2, max_seconds=0.6),
        # The tests send many unauthenticated requests from one client on purpose.
        "auth_failure_limit": 1_000_000,
        **app_options,
    }
    app = create_app(settings, **options)
    gov = get_governance(settings)
    for company_id in INDUSTRIES:
        join_census(gov, settings, company_id)
    world = World(settings, app, TestClient(app))
    for principal, role in PRINCIPALS.items():
        key = identity.generate_key()
        world.keys[principal] = key
        principal_service.register_principal(
            gov, OperatorFacts(OPERATOR_ID), principal, role, identity.public_b64(key)
        )
    world.keys[OPERATOR_ID] = identity.sandbox_key(settings.keys_dir, "operator")
    for name in ROLES:
        world.tokens[name] = world.new_token(name)
    with world.client:
        yield world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("api") / "home"
    with isolated_home(home) as settings:
        yield from build_world(home, settings)
