"""End to end over HTTP, against `sandbox serve` (uvicorn) on a free port of 127.0.0.1.

The operator signs in with the sandbox's operator key and registers an engineer and a
regulator; three companies of high-risk industries prepare their nodes (keys, vaults) and
join with signed requests; the engineer files a high-tier job, which waits for approval and
may not start; the regulator approves it; the engineer starts it and follows its progress as
server-sent events until it completes; the regulator reads its rounds and compliance summary
and verifies a round's ledger entry against the signed checkpoint with the log's public key
alone. Then the server shuts down cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox import identity
from sandbox.config import Settings
from sandbox.data import census
from sandbox.db import get_engine
from sandbox.identity.requests import join_request, sign_token_request
from sandbox.ledger import leaf_hash, verify_checkpoint, verify_inclusion
from sandbox.node.onboarding import prepare_node
from sandbox.node.pins import pin
from sandbox.registry import jobs as job_store

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
HIGH = ["Hospital services", "Medical except hospital", "Finance insurance and real estate"]
LOW = ["Construction", "Retail trade", "Transportation"]
PURPOSE = "income-prediction"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server(
    sandbox_home: Settings, tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]),
    }
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - kept open for the server's life
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox.cli",
            "serve",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the server did not start:\n" + (tmp_path / "server.log").read_text())
            time.sleep(0.3)
        yield url, process, tmp_path / "server.log"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def sse(response: httpx.Response, limit: float) -> Iterator[tuple[str, dict[str, Any]]]:
    """The events of a server-sent event stream, as they come."""
    event: dict[str, str] = {}
    deadline = time.monotonic() + limit
    for line in response.iter_lines():
        if time.monotonic() > deadline:
            raise TimeoutError("the stream did not end in time")
        if not line:
            if "event" in event:
                yield event["event"], json.loads(event["data"])
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            event[name] = value


@dataclass
class People:
    """Who acts in a test, each with the headers of its token."""

    http: httpx.Client
    operator_key: Any
    engineer: dict[str, str]
    regulator: dict[str, str]
    companies: dict[str, dict[str, str]]
    regulator_key: Any = None


def sign_in(http: httpx.Client, key: Any, role: str, principal: str) -> dict[str, str]:
    issued = http.post("/auth/token", json=sign_token_request(key, role, principal))
    assert issued.status_code == 201, issued.text
    return {"Authorization": f"Bearer {issued.json()['token']}"}


def admit(
    http: httpx.Client, regulator: dict[str, str], operator: dict[str, str], company_id: str
) -> None:
    """The review of a company's application: a regulator admits it where its data asks for
    one (the operator's admission is refused until then), then the operator."""
    pending = http.get("/applications", headers=operator).json()
    [application] = [a["id"] for a in pending if a["company_id"] == company_id]
    first = http.post(f"/applications/{application}/admit", headers=operator)
    if first.status_code == 403:
        assert "a regulator admits it before" in first.json()["detail"]
        by_regulator = http.post(f"/applications/{application}/admit", headers=regulator)
        assert by_regulator.status_code == 200, by_regulator.text
        first = http.post(f"/applications/{application}/admit", headers=operator)
    assert first.status_code == 200 and first.json()["status"] == "admitted", first.text


def set_up(settings: Settings, url: str, industries: list[str]) -> People:
    """Over HTTP: the operator (with the sandbox's own operator key) registers an engineer
    and a regulator; companies of ``industries`` prepare their nodes here and join."""
    http = httpx.Client(base_url=url, timeout=60)
    operator_key = identity.read_private_key(settings.keys_dir / "operator.key")
    operator = sign_in(http, operator_key, "operator", "operator")
    keys = {"eve": identity.generate_key(), "reg": identity.generate_key()}
    for principal, role in (("eve", "engineer"), ("reg", "regulator")):
        added = http.post(
            "/operator/principals",
            json={
                "id": principal,
                "role": role,
                "public_key": identity.public_b64(keys[principal]),
            },
            headers=operator,
        )
        assert added.status_code == 201, added.text
    companies = {}
    for industry in industries:
        company_id = census.slug(industry)
        key, manifest = prepare_node(
            settings.company_dir(company_id),
            company_id,
            census.company_table(industry, rows=150, seed=2),
        )
        body, signature = join_request(key, company_id, industry, industry, manifest, (PURPOSE,))
        joined = http.post(
            "/companies",
            content=body,
            headers={"Content-Type": "application/json", "X-Sandbox-Signature": signature},
        )
        assert joined.status_code == 202, joined.text
        keys_to_pin = joined.json()["sandbox_keys"]
        pin(settings.company_dir(company_id), keys_to_pin["operator"], keys_to_pin["regulator"])
        admit(http, sign_in(http, keys["reg"], "regulator", "reg"), operator, company_id)
        companies[company_id] = sign_in(http, key, "company", company_id)
    return People(
        http,
        operator_key,
        sign_in(http, keys["eve"], "engineer", "eve"),
        sign_in(http, keys["reg"], "regulator", "reg"),
        companies,
        keys["reg"],
    )


def test_a_high_tier_job_from_join_to_verified_rounds(
    sandbox_home: Settings, server: tuple[str, subprocess.Popen[bytes], Path]
) -> None:
    url, process, log_path = server
    people = set_up(sandbox_home, url, HIGH)
    http, engineer, regulator, companies = (
        people.http,
        people.engineer,
        people.regulator,
        people.companies,
    )
    operator_key = people.operator_key

    # The engineer files a high-tier job with the privacy the tier asks for.
    tiers = http.get("/operator/policy-set", headers=engineer).json()["tiers"]
    cap = float(tiers["high"]["dp_epsilon_cap"])
    spec = {
        "purpose": PURPOSE,
        "companies": list(companies),
        "rounds": 2,
        "local_epochs": 1,
        "min_participants": 3,
        "privacy": {"secure_aggregation": True, "dp": {"epsilon": cap}},
    }
    filed = http.post("/jobs", json=spec, headers=engineer)
    assert filed.status_code == 201, filed.text
    job = filed.json()
    assert job["risk_tier"] == "high" and job["status"] == "awaiting_approval"
    assert job["admission"]["allowed"] is True
    job_id = job["id"]
    early = http.post(f"/jobs/{job_id}/start", headers=engineer)
    assert early.status_code == 403 and "tier.high.regulator_approval" not in early.text

    # The regulator approves it from the queue.
    queue = http.get("/approvals", headers=regulator).json()["jobs"]
    assert [j["id"] for j in queue] == [job_id]
    # ... signing, on the regulator's own machine, the statement the API gives for the note.
    note = "privacy as the tier asks"
    statement = http.get(
        f"/approvals/{job_id}/statement", params={"note": note}, headers=regulator
    ).json()
    signature = identity.sign(people.regulator_key, statement["statement"].encode("utf-8"))
    approved = http.post(
        f"/approvals/{job_id}/approve",
        json={"note": note, "signed_at": statement["signed_at"], "signature": signature},
        headers=regulator,
    )
    assert approved.status_code == 200 and approved.json()["status"] == "approved"

    # The engineer starts it and follows it to its end.
    started = http.post(f"/jobs/{job_id}/start", headers=engineer)
    assert started.status_code == 202, started.text
    seen: list[tuple[str, dict[str, Any]]] = []
    with http.stream("GET", f"/jobs/{job_id}/events", headers=engineer, timeout=None) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for name, data in sse(stream, limit=480):
            seen.append((name, data))
            if name == "end":
                break
    rounds_seen = [data["number"] for name, data in seen if name == "round"]
    end = seen[-1][1]
    assert end["status"] == "completed", end
    assert rounds_seen == [1, 2] and end["model_hash"]

    # The regulator reads the rounds and the compliance summary.
    rounds = http.get(f"/jobs/{job_id}/rounds", headers=regulator).json()["rounds"]
    assert [r["status"] for r in rounds] == ["completed", "completed"]
    assert all(sorted(r["took_part"]) == sorted(companies) for r in rounds)
    summary = http.get(f"/jobs/{job_id}/compliance", headers=regulator).json()
    assert summary["model_hash"] == end["model_hash"] and summary["model_index"] is not None
    assert summary["approval"]["allowed"] and summary["approved_by"] == "reg"
    assert set(summary["companies"]) == set(companies)
    assert all(use["receipts"] >= 2 for use in summary["companies"].values())
    round_index = summary["rounds"][-1]["ledger_index"]

    # ... and verifies that round's entry against the signed checkpoint, with the public key
    # it holds (taken here from the operator's key, as it would be handed over out of band).
    public_key = identity.public_bytes(operator_key)
    proof = http.get(f"/audit/entries/{round_index}", headers=regulator).json()
    assert json.loads(proof["entry"])["action"] == "round.completed"
    head = verify_checkpoint(proof["checkpoint"], public_key)
    path = [bytes.fromhex(h) for h in proof["audit_path"]]
    leaf = leaf_hash(proof["entry"].encode("utf-8"))
    assert verify_inclusion(leaf, round_index, head.size, path, head.root)
    assert not verify_inclusion(leaf, round_index + 1, head.size, path, head.root)

    # A company sees every use of its data and the budget it spent.
    some_company, company_headers = next(iter(companies.items()))
    receipts = http.get(f"/companies/{some_company}/receipts", headers=company_headers).json()
    assert {r["job_id"] for r in receipts["receipts"]} == {job_id}
    spend = http.get(f"/companies/{some_company}/privacy-spend", headers=company_headers).json()
    [used] = spend["jobs"]
    # Three DP runs paid for: the local-only baseline (trained with DP-SGD) and two rounds.
    assert used["job_id"] == job_id and used["runs"] == 3 and used["runs_unsettled"] == 0
    assert 0 < used["epsilon"] <= cap and used["epsilon_receipted"] <= used["epsilon"] + 1e-9

    # The server shuts down cleanly: the app's shutdown runs, then uvicorn passes the signal on.
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in log_path.read_text()


def test_shutting_down_mid_run_ends_streams_and_stops_the_job(
    sandbox_home: Settings, server: tuple[str, subprocess.Popen[bytes], Path]
) -> None:
    url, process, log_path = server
    people = set_up(sandbox_home, url, LOW)
    spec = {
        "purpose": PURPOSE,
        "companies": list(people.companies),
        "rounds": 50,
        "local_epochs": 1,
        "privacy": {"dp": {"epsilon": 8.0}},
    }
    filed = people.http.post("/jobs", json=spec, headers=people.engineer).json()
    assert filed["status"] == "admitted", filed
    started = people.http.post(f"/jobs/{filed['id']}/start", headers=people.engineer)
    assert started.status_code == 202, started.text
    seen = []
    with people.http.stream(
        "GET", f"/jobs/{filed['id']}/events", headers=people.engineer, timeout=None
    ) as stream:
        for name, data in sse(stream, limit=300):
            seen.append((name, data))
            if name == "round":
                process.send_signal(signal.SIGTERM)  # the server goes down mid-run
            if name == "end":
                break
    assert seen[-1][0] == "end" and "shutting down" in seen[-1][1]["why"]
    assert process.wait(timeout=90) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in log_path.read_text()
    job = job_store.get_job(get_engine(sandbox_home.database_url), filed["id"])
    assert job.status == "stopped" and "start the job again" in (job.status_reason or "")
    assert 1 <= job.rounds_completed < 50
