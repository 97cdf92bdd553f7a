"""One act, one record: every act performed through each face that offers it (the CLI, the
API, the console) leaves the same sequence of ledger actions and decisions, ids and times
aside, because every face calls the same service.

Each case starts from a fresh sandbox brought to the act's precondition, performs the act
through one face, and reads back what the act appended to the ledger: each entry's action,
who acted, and for a decision whether it allowed and which policies decided.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from policies.facts import EngineerFacts
from policies.policyset import DEFAULT_POLICY_DIR, hash_files, policy_files
from sandbox import identity
from sandbox.api import create_app
from sandbox.cli import app as cli_app
from sandbox.config import Settings
from sandbox.data import census
from sandbox.governance import Governance, get_governance
from sandbox.identity import pki
from sandbox.identity.requests import join_request
from sandbox.node.onboarding import prepare_node
from sandbox.protocol.jobspec import JobSpec
from sandbox.registry.policy_sets import sign_hash
from sandbox.services import applications, companies, consents, jobs, principals, releases
from sandbox.utc import rfc3339, utcnow
from sandbox.vocabulary import OPERATOR_ID
from tests.support.world import hold_for_review

PURPOSE = "income-prediction"
LOW = ["Construction", "Retail trade", "Transportation"]
HIGH = ["Hospital services", "Construction", "Retail trade"]

Step = tuple[str, str, bool | None, tuple[str, ...] | None]
"""(action, actor, allowed, deciding policies) of one ledger entry."""


@dataclass
class World:
    settings: Settings
    gov: Governance
    client: TestClient
    tmp: Path
    tokens: dict[str, str] = field(default_factory=dict)
    consoles: dict[str, TestClient] = field(default_factory=dict)
    keys: dict[str, Path] = field(default_factory=dict)

    def approval(self, job: str, who: str, note: str) -> dict[str, str]:
        """An approval signed with ``who``'s key, as the regulator's own machine makes it."""
        signed_at = rfc3339(utcnow())
        statement = jobs.approval_statement(self.gov, job, who, signed_at, note)
        signature = identity.sign(identity.read_private_key(self.keys[who]), statement)
        return {"note": note, "signed_at": signed_at, "signature": signature}

    def ready(self, who: str, role: str) -> None:
        """A token for ``who`` and a console signed in with it: both recorded before an act
        is measured (getting them is an act of its own)."""
        if who not in self.tokens:
            self.tokens[who] = principals.issue_token_locally(self.gov, role, who).token
        if who not in self.consoles:
            console = TestClient(self.client.app)
            signed = console.post("/auth/session", json={"token": self.tokens[who]})
            assert signed.status_code == 200, signed.text
            self.consoles[who] = console

    def bearer(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def console(self, who: str) -> TestClient:
        """A client signed in to the console as ``who`` (its session cookie)."""
        return self.consoles[who]

    def cli(self, *args: str) -> str:
        result = CliRunner().invoke(cli_app, list(args))
        assert result.exit_code == 0, result.output
        return result.output


def steps_since(gov: Governance, size: int) -> list[Step]:
    out = []
    for entry in gov.ledger.entries(after_index=size - 1, limit=1000):
        record = entry.record
        decision = record.decision
        out.append(
            (
                record.action,
                record.actor.principal,
                None if decision is None else decision.allowed,
                None if decision is None else tuple(decision.policies),
            )
        )
    return out


def join(gov: Governance, settings: Settings, industry: str) -> str:
    company = census.slug(industry)
    companies.join(
        gov,
        settings.company_dir(company),
        company,
        industry,
        census.company_table(industry, rows=60, seed=1),
        purposes=(PURPOSE,),
    )
    return company


def spec(members: list[str]) -> JobSpec:
    return JobSpec.model_validate(
        {
            "purpose": PURPOSE,
            "companies": members,
            "rounds": 1,
            "local_epochs": 1,
            "min_participants": 2,
            "privacy": {"dp": {"epsilon": 5.0}},
        }
    )


@pytest.fixture
def world(sandbox_home: Settings, tmp_path: Path) -> Iterator[World]:
    gov = get_governance(sandbox_home)
    operator = principals.operator(gov)
    world = World(sandbox_home, gov, TestClient(create_app(sandbox_home, run_capacity=1)), tmp_path)
    for who, role in (("eve", "engineer"), ("reg-anna", "regulator")):
        key = identity.generate_key()
        world.keys[who] = tmp_path / f"{who}.pem"
        identity.write_private_key(world.keys[who], key)
        principals.register_principal(gov, operator, who, role, identity.public_b64(key))
    with world.client:
        for who, role in (
            ("eve", "engineer"),
            ("reg-anna", "regulator"),
            (OPERATOR_ID, "operator"),
        ):
            world.ready(who, role)
        yield world
        for console in world.consoles.values():
            console.close()


# ------------------------------------------------------------------------------ the acts
def prepared_table(world: World, industry: str, where: str) -> tuple[Path, Path]:
    """A company's own file and manifest, as the CLI's join takes them."""
    data = world.tmp / f"{where}.csv"
    census.industry_frame(industry, rows=60, seed=1).to_csv(data, index=False)
    manifest = world.tmp / f"{where}.json"
    manifest.write_text(census.manifest_for(industry).model_dump_json(exclude_none=True))
    return data, manifest


def join_by_cli(world: World) -> None:
    data, manifest = prepared_table(world, "Construction", "join")
    world.cli("company", "join", "construction", "--data", str(data), "--manifest", str(manifest),
              "--purpose", PURPOSE)  # fmt: skip


def application(world: World) -> str:
    """A company's signed request to join, received through the API and pending."""
    node = world.settings.company_dir("construction")
    key, filled = prepare_node(node, "construction", census.company_table("Construction", 60, 1))
    body, signature = join_request(key, "construction", "construction", "Construction", filled,
                                   (PURPOSE,))  # fmt: skip
    answer = world.client.post(
        "/companies",
        content=body,
        headers={"Content-Type": "application/json", "X-Sandbox-Signature": signature},
    )
    assert answer.status_code == 202, answer.text
    [pending] = applications.list_applications(world.gov, principals.operator(world.gov))
    world.ready(OPERATOR_ID, "operator")
    return pending.id


def admit_by_cli(world: World, application_id: str) -> None:
    world.cli("company", "admit", application_id, "--industry", "Construction", "--personal-data",
              "--as", OPERATOR_ID)  # fmt: skip


def admit_by_api(world: World, application_id: str) -> None:
    answer = world.client.post(
        f"/applications/{application_id}/admit", headers=world.bearer(OPERATOR_ID)
    )
    assert answer.status_code == 200, answer.text


def second_dataset(world: World) -> Path:
    company = join(world.gov, world.settings, "Construction")
    data, manifest = prepared_table(world, "Construction", "second")
    raw = json.loads(manifest.read_text()) | {"name": "census2"}
    manifest.write_text(json.dumps(raw))
    out = world.cli("company", "prepare-dataset", company, "--data", str(data),
                    "--manifest", str(manifest))  # fmt: skip
    world.ready(company, "company")
    return Path(out.strip().splitlines()[-1])


def dataset_by_cli(world: World, filled: Path) -> None:
    world.cli("company", "register-dataset", "construction", "--manifest", str(filled))


def dataset_by_api(world: World, filled: Path) -> None:
    headers = world.bearer("construction") | {"Content-Type": "application/json"}
    answer = world.client.post("/companies/construction/datasets",
                               content=filled.read_bytes(), headers=headers)  # fmt: skip
    assert answer.status_code == 201, answer.text


def one_company(world: World) -> str:
    company = join(world.gov, world.settings, "Construction")
    world.ready(company, "company")
    return company


def company_token(world: World, company: str) -> dict[str, str]:
    return world.bearer(company)


def grant_by_cli(world: World, company: str) -> None:
    world.cli("company", "consent", "grant", company, "--purpose", "fraud-model")


def grant_by_api(world: World, company: str) -> None:
    headers = company_token(world, company)
    answer = world.client.post(f"/companies/{company}/consents", headers=headers,
                               json={"dataset": "census", "purpose": "fraud-model"})  # fmt: skip
    assert answer.status_code == 201, answer.text


def a_consent(world: World) -> tuple[str, str]:
    company = join(world.gov, world.settings, "Construction")
    granted = consents.grant_consent(world.gov, company, "census", "fraud-model")
    world.ready(company, "company")
    return company, granted.id


def revoke_by_cli(world: World, held: tuple[str, str]) -> None:
    world.cli("company", "consent", "revoke", *held, "--reason", "done")


def revoke_by_api(world: World, held: tuple[str, str]) -> None:
    company, consent = held
    headers = company_token(world, company)
    answer = world.client.post(f"/companies/{company}/consents/{consent}/revoke",
                               headers=headers, json={"reason": "done"})  # fmt: skip
    assert answer.status_code == 200, answer.text


def members(world: World, industries: list[str] = LOW) -> list[str]:
    return [join(world.gov, world.settings, industry) for industry in industries]


def file_by_cli(world: World, ids: list[str]) -> None:
    path = world.tmp / "job.json"
    path.write_text(spec(ids).model_dump_json())
    world.cli("job", "file", str(path), "--as", "eve")


def file_by_api(world: World, ids: list[str]) -> None:
    answer = world.client.post("/jobs", json=spec(ids).model_dump(mode="json"),
                               headers=world.bearer("eve"))  # fmt: skip
    assert answer.status_code == 201, answer.text


def awaiting(world: World) -> str:
    """A high-tier job that awaits a regulator's approval (its companies join first)."""
    members(world, HIGH)
    return high_job(world)


def high_job(world: World) -> str:
    ids = [census.slug(i) for i in HIGH]
    high = JobSpec.model_validate(
        spec(ids).model_dump()
        | {"min_participants": 3, "privacy": {"secure_aggregation": True, "dp": {"epsilon": 3.0}}}
    )
    filed = jobs.file_job(world.gov, high, EngineerFacts("eve"))
    assert filed.job.status == "awaiting_approval", filed.reasons
    return filed.job.id


def approve_by_cli(world: World, job: str) -> None:
    world.cli("job", "approve", job, "--as", "reg-anna", "--note", "fine",
              "--key-file", str(world.keys["reg-anna"]))  # fmt: skip


def approve_by_api(world: World, job: str) -> None:
    answer = world.client.post(f"/approvals/{job}/approve",
                               json=world.approval(job, "reg-anna", "fine"),
                               headers=world.bearer("reg-anna"))  # fmt: skip
    assert answer.status_code == 200, answer.text


def approve_by_console(world: World, job: str) -> None:
    client = world.console("reg-anna")
    answer = client.post(f"/console/jobs/{job}/approve",
                         data=world.approval(job, "reg-anna", "fine"),
                         headers={"Origin": "http://testserver"}, follow_redirects=False)  # fmt: skip
    assert answer.status_code == 303, answer.text


def reject_by_cli(world: World, job: str) -> None:
    world.cli("job", "reject", job, "--as", "reg-anna", "--reason", "too broad")


def reject_by_api(world: World, job: str) -> None:
    answer = world.client.post(f"/approvals/{job}/reject", json={"reason": "too broad"},
                               headers=world.bearer("reg-anna"))  # fmt: skip
    assert answer.status_code == 200, answer.text


def reject_by_console(world: World, job: str) -> None:
    client = world.console("reg-anna")
    answer = client.post(f"/console/jobs/{job}/reject", data={"reason": "too broad"},
                         headers={"Origin": "http://testserver"}, follow_redirects=False)  # fmt: skip
    assert answer.status_code == 303, answer.text


def held_model(world: World) -> str:
    """An approved high-tier job whose model the release gate held for want of evidence."""
    job = awaiting(world)
    jobs.approve_as_installation_regulator(world.gov, job, "approved")
    hold_for_review(world.gov.engine, job)
    return job


def reject_release_by_cli(world: World, job: str) -> None:
    world.cli("job", "review-release", job, "--reject", "--as", "reg-anna", "--note",
              "too few positives", "--key-file", str(world.keys["reg-anna"]))  # fmt: skip


def reject_release_by_api(world: World, job: str) -> None:
    signed_at = rfc3339(utcnow())
    statement = releases.review_statement(
        job, "ab" * 32, "reg-anna", False, signed_at, "too few positives"
    )
    signature = identity.sign(identity.read_private_key(world.keys["reg-anna"]), statement)
    answer = world.client.post(f"/releases/{job}/review", headers=world.bearer("reg-anna"),
                               json={"approve": False, "note": "too few positives",
                                     "signed_at": signed_at, "signature": signature})  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcome"] == "deny"


def admitted(world: World) -> str:
    filed = jobs.file_job(world.gov, spec(members(world)), EngineerFacts("eve"))
    assert filed.job.status == "admitted", filed.reasons
    world.ready("construction", "company")
    return filed.job.id


def read_by_cli(world: World, job: str) -> None:
    world.cli("job", "show", job, "--as", "construction")


def read_by_api(world: World, job: str) -> None:
    headers = company_token(world, "construction")
    assert world.client.get(f"/jobs/{job}", headers=headers).status_code == 200


def read_by_console(world: World, job: str) -> None:
    page = world.console("construction").get(f"/console/jobs/{job}")
    assert page.status_code == 200, page.text


def audit_by_cli(world: World, job: str) -> None:
    world.cli("audit", "entries", "--job", job, "--as", "reg-anna")


def audit_by_api(world: World, job: str) -> None:
    answer = world.client.get("/audit/entries", params={"job": job},
                              headers=world.bearer("reg-anna"))  # fmt: skip
    assert answer.status_code == 200, answer.text


def audit_by_console(world: World, job: str) -> None:
    page = world.console("reg-anna").get("/console/audit", params={"job": job})
    assert page.status_code == 200, page.text


def report_by_cli(world: World, job: str) -> None:
    world.cli("report", job, "--out", str(world.tmp / "report"), "--as", "reg-anna")


def report_by_console(world: World, job: str) -> None:
    page = world.console("reg-anna").get(f"/console/jobs/{job}/report.json")
    assert page.status_code == 200, page.text


def start_by_cli(world: World, job: str) -> None:
    world.cli("job", "run", job, "--as", "eve")


def start_by_api(world: World, job: str) -> None:
    answer = world.client.post(f"/jobs/{job}/start", headers=world.bearer("eve"))
    assert answer.status_code == 202, answer.text


def node_key_material(world: World) -> Path:
    join(world.gov, world.settings, "Construction")
    path = world.tmp / "node.key"
    pki.generate_node_auth_key(path, "construction node")
    return pki.public_key_path(path)


def node_key_by_cli(world: World, public: Path) -> None:
    world.cli("federation", "node-key", "construction", "--public-key", str(public))


def signed_policy_set(world: World) -> dict[str, Any]:
    files = policy_files(DEFAULT_POLICY_DIR)
    regulator = identity.sandbox_key(world.settings.keys_dir, "regulator")
    return {
        "files": {name: data.decode("utf-8") for name, data in files.items()},
        "signature": sign_hash(regulator, hash_files(files)),
    }


def policy_by_api(world: World, body: dict[str, Any]) -> None:
    answer = world.client.post("/operator/policy-set", json=body,
                               headers=world.bearer(OPERATOR_ID))  # fmt: skip
    assert answer.status_code == 200, answer.text


def voucher_by_cli(world: World, _: Any) -> None:
    world.cli("company", "voucher", "construction", "--amount", "1.50", "--purpose",
              "a small firm's first job", "--as", OPERATOR_ID)  # fmt: skip


def voucher_by_api(world: World, _: Any) -> None:
    answer = world.client.post("/companies/construction/vouchers",
                               json={"amount": "1.50", "purpose": "a small firm's first job"},
                               headers=world.bearer(OPERATOR_ID))  # fmt: skip
    assert answer.status_code == 201, answer.text


# --------------------------------------------------------------------------- expectations
@dataclass(frozen=True)
class Act:
    name: str
    given: Callable[[World], Any]
    faces: dict[str, Callable[[World, Any], None]]
    expected: list[tuple[str, str]]
    """(action, actor) of every entry the act appends, in order; every decision allowed."""

    def __str__(self) -> str:
        return self.name


def _no_setup(_: World) -> None:
    return None


JOINED = [
    ("decision.join", "construction"),
    ("decision.register_dataset", "construction"),
    ("decision.grant_consent", "construction"),
    ("company.joined", "construction"),
    ("dataset.registered", "construction"),
    ("consent.granted", "construction"),
]
"""What a company's joining records, whoever enrols it."""

ACTS = [
    Act("join", _no_setup, {"cli": lambda w, _: join_by_cli(w)}, JOINED),
    Act(
        "admit an application to join",
        application,
        {"cli": admit_by_cli, "api": admit_by_api},
        [("decision.review_application", OPERATOR_ID), *JOINED, ("company.admitted", OPERATOR_ID)],
    ),
    Act(
        "register a dataset",
        second_dataset,
        {"cli": dataset_by_cli, "api": dataset_by_api},
        [("decision.register_dataset", "construction"), ("dataset.registered", "construction")],
    ),
    Act(
        "grant consent",
        one_company,
        {"cli": grant_by_cli, "api": grant_by_api},
        [("decision.grant_consent", "construction"), ("consent.granted", "construction")],
    ),
    Act(
        "revoke consent",
        a_consent,
        {"cli": revoke_by_cli, "api": revoke_by_api},
        [("decision.revoke_consent", "construction"), ("consent.revoked", "construction")],
    ),
    Act(
        "file a job",
        members,
        {"cli": file_by_cli, "api": file_by_api},
        [("decision.submit_job", "eve"), ("job.filed", "eve")],
    ),
    Act(
        "approve a job",
        awaiting,
        {"cli": approve_by_cli, "api": approve_by_api, "console": approve_by_console},
        [("decision.approve_job", "reg-anna"), ("job.approved", "reg-anna")],
    ),
    Act(
        "reject a job",
        awaiting,
        {"cli": reject_by_cli, "api": reject_by_api, "console": reject_by_console},
        [("decision.reject_job", "reg-anna"), ("job.rejected", "reg-anna")],
    ),
    Act(
        "reject a held model's release on review",
        held_model,
        {"cli": reject_release_by_cli, "api": reject_release_by_api},
        [("decision.review_release", "reg-anna"), ("model.withheld", "reg-anna")],
    ),
    Act(
        "read a job",
        admitted,
        {"cli": read_by_cli, "api": read_by_api, "console": read_by_console},
        [("decision.read_job", "construction")],
    ),
    Act(
        "read the audit log",
        admitted,
        {"cli": audit_by_cli, "api": audit_by_api, "console": audit_by_console},
        [("decision.read_audit", "reg-anna")],
    ),
    Act(
        "export a job's evidence",
        admitted,
        {"cli": report_by_cli, "console": report_by_console},
        [("decision.export_audit", "reg-anna")],
    ),
    Act(
        "register a node key",
        node_key_material,
        {"cli": node_key_by_cli},
        [("decision.register_node_key", "operator"), ("node_key.recorded", "operator")],
    ),
    Act(
        "issue a compute voucher",
        one_company,
        {"cli": voucher_by_cli, "api": voucher_by_api},
        [("decision.issue_voucher", OPERATOR_ID), ("voucher.issued", OPERATOR_ID)],
    ),
    Act(
        "activate a policy set",
        signed_policy_set,
        {"api": policy_by_api},
        [("decision.activate_policy", "operator")],
    ),
]

CASES = [(act, face) for act in ACTS for face in act.faces]


@pytest.mark.parametrize(("act", "face"), CASES, ids=[f"{a.name}-{f}" for a, f in CASES])
def test_every_face_records_the_same_act_the_same_way(world: World, act: Act, face: str) -> None:
    given = act.given(world)
    size = world.gov.ledger.size
    act.faces[face](world, given)
    steps = steps_since(world.gov, size)
    assert [(action, actor) for action, actor, _, _ in steps] == act.expected, steps
    assert all(allowed is not False for _, _, allowed, _ in steps), steps
    for action, _, allowed, policies in steps:
        if action.startswith("decision."):
            assert allowed is True and policies, (action, policies)


def test_the_faces_name_the_same_deciding_policies(world: World) -> None:
    """The policies that decided an act are the same whichever face performed it: the
    approval through the CLI, the API and the console, each on its own job."""
    decided = {}
    for face, perform in (
        ("cli", approve_by_cli),
        ("api", approve_by_api),
        ("console", approve_by_console),
    ):
        job = awaiting(world) if not decided else high_job(world)
        size = world.gov.ledger.size
        perform(world, job)
        decided[face] = [(a, p) for a, _, _, p in steps_since(world.gov, size)]
    assert decided["cli"] == decided["api"] == decided["console"]


@pytest.mark.slow
@pytest.mark.parametrize("face", ["cli", "api"])
def test_a_start_is_the_same_act_from_the_cli_and_the_api(world: World, face: str) -> None:
    """Starting a job: one decision and one record, whichever face, before any round."""
    job = admitted(world)
    size = world.gov.ledger.size
    (start_by_cli if face == "cli" else start_by_api)(world, job)
    steps = steps_since(world.gov, size)
    assert [(a, who) for a, who, _, _ in steps[:2]] == [
        ("decision.start_job", "eve"),
        ("job.started", "eve"),
    ]
