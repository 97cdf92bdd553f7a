"""A malicious coordinator against real company nodes: every forged task is refused before a
row is read, the refusal is in the node's own log, it reaches the ledger (here the company
hands the signed notices over itself, as a coordinator that lies would not pass them on), and
the company lists it through the API. On the simulation engine the same attacks come from a
malicious ServerApp; on the deployment engine, see ``tests/deployment/test_deployment.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.task_identity import TaskIdentity
from starlette.testclient import TestClient

from clients.app import make_client_app
from sandbox.api import create_app
from sandbox.config import Settings
from sandbox.data.vault import Vault
from sandbox.governance import get_governance
from sandbox.node.home import NodeHome
from sandbox.node.refusals import notices
from sandbox.registry.models import Job
from sandbox.runtime.simulation import run_engine
from sandbox.services import companies, consents, principals
from tests.adversarial.nodes import (
    ATTACKS,
    HIGH,
    HIGH_TIER_JOB,
    REPEATED,
    Honest,
    Task,
    data_uses,
    honest_task,
    refusals_in_log,
)
from tests.support.world import file_runnable, join


@dataclass
class World:
    settings: Settings
    companies: list[str]
    job: Job
    honest: Honest
    nodes: dict[str, NodeHome]


@pytest.fixture
def world(sandbox_home: Settings, engine: Any) -> World:
    companies = join(sandbox_home, engine, HIGH, rows=120)
    job = file_runnable(sandbox_home, {**HIGH_TIER_JOB, "companies": companies})
    other = file_runnable(sandbox_home, {**HIGH_TIER_JOB, "companies": companies, "seed": 7})
    nodes = {c: NodeHome(sandbox_home.company_dir(c)) for c in companies}
    return World(sandbox_home, companies, job, honest_task(sandbox_home, job, other), nodes)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every read of a vault's rows in this process, by split."""
    seen: list[str] = []
    original = Vault.read

    def counted(self: Vault, split: str) -> Any:
        seen.append(split)
        return original(self, split)

    monkeypatch.setattr(Vault, "read", counted)
    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)
    return seen


def send(world: World, company: str, task: Task) -> Message:
    """The task, straight to the company's own app (built from its own folder)."""
    app = make_client_app([str(world.nodes[company].folder)])
    message = task.message(world.honest.weights())
    message.metadata._src_node_id = 0  # type: ignore[attr-defined]
    context = Context(
        run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(), run_config={}
    )
    return app(message, context)


def company_client(world: World, company: str) -> Iterator[TestClient]:
    app = create_app(world.settings, run_capacity=0)
    gov = get_governance(world.settings)
    token = principals.issue_token_locally(gov, "company", company).token
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_each_forged_task_is_refused_before_a_row_is_read(
    world: World, reads: list[str], attack: str
) -> None:
    forge, cause = ATTACKS[attack]
    company = world.companies[0]
    node = world.nodes[company]
    reply = send(world, company, forge(world.honest))
    assert reply.has_error(), attack
    assert "refused by the company's gate" in reply.error.reason
    assert reads == [], f"{attack}: the node read rows before refusing"
    assert data_uses(node) == []
    logged = refusals_in_log(node)
    assert [r["cause"] for r in logged] == [cause], logged
    # The refusal reaches the ledger as the company's own statement, and the company
    # lists it through the API.
    for client in company_client(world, company):
        pending = [{"payload": n.text, "signature": n.signature} for n in notices(node)]
        handed = client.post(f"/companies/{company}/refusals", json={"notices": pending})
        assert handed.status_code == 201, handed.text
        listed = client.get(f"/companies/{company}/refusals").json()
        assert [r["cause"] for r in listed] == [cause]
        assert listed[0]["job_id"] == world.job.id and listed[0]["ledger_index"] is not None
        entry = get_governance(world.settings).ledger.entry(listed[0]["ledger_index"])
        assert entry.record.action == "node.refused"
        assert entry.record.actor.principal == company


def test_the_honest_task_is_served(world: World, reads: list[str]) -> None:
    """The control: the same task, unforged, is served and reads the vault."""
    company = world.companies[0]
    reply = send(world, company, world.honest.task)
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    assert reads and data_uses(world.nodes[company])
    assert refusals_in_log(world.nodes[company]) == []


@pytest.mark.parametrize("attack", sorted(REPEATED))
def test_tasks_beyond_the_spec_are_refused(world: World, reads: list[str], attack: str) -> None:
    kind, allowed, cause = REPEATED[attack]
    company = world.companies[0]
    task = replace(world.honest.task, kind=kind, round=0)
    for _ in range(allowed):
        served = send(world, company, task)
        assert not served.has_error(), served.error.reason if served.has_error() else ""
    before = len(reads)
    again = send(world, company, task)
    assert again.has_error() and len(reads) == before, attack
    assert [r["cause"] for r in refusals_in_log(world.nodes[company])] == [cause]


def test_a_warrant_after_the_consent_was_revoked_is_refused(world: World, reads: list[str]) -> None:
    company = world.companies[0]
    gov = get_governance(world.settings)
    live = [c for c in companies.company_consents(gov, None, company) if c.revoked_at is None]
    # The company revokes at its node (its own record is what its gate decides from).
    consents.revoke_consent(
        gov, company, live[0].id, "the company withdrew", node_dir=world.nodes[company].folder
    )
    reply = send(world, company, world.honest.task)
    assert reply.has_error() and "no live consent" in reply.error.reason
    assert reads == []
    assert [r["cause"] for r in refusals_in_log(world.nodes[company])] == ["policy"]


# ---------------------------------------------------------------- the simulation engine
def malicious_server_app(world: World, forged: list[Task], replies: list[Message]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        deadline = time.monotonic() + 60
        nodes = list(grid.get_node_ids())
        while len(nodes) < len(world.companies) and time.monotonic() < deadline:
            time.sleep(0.5)
            nodes = list(grid.get_node_ids())
        for task in forged:
            messages = [task.message(world.honest.weights(), node_id) for node_id in nodes]
            replies.extend(grid.send_and_receive(messages, timeout=60))

    return app


@pytest.mark.slow
def test_a_malicious_server_app_is_refused_by_every_node(world: World) -> None:
    forged = [forge(world.honest) for forge, _ in ATTACKS.values()]
    replies: list[Message] = []
    dirs = [str(world.nodes[c].folder) for c in world.companies]
    run_engine(
        world.settings,
        malicious_server_app(world, forged, replies),
        make_client_app(dirs),
        len(dirs),
        client_cpus=1.0,
    )
    assert len(replies) == len(forged) * len(dirs)
    assert all(r.has_error() for r in replies)
    for company, node in world.nodes.items():
        causes = sorted(r["cause"] for r in refusals_in_log(node))
        assert causes == sorted(cause for _, cause in ATTACKS.values()), company
        assert data_uses(node) == [], company
        assert json.dumps(refusals_in_log(node))  # the log holds the reasons
