"""Jobs and the audit ledger over the API, short of running a job (see test_e2e_http.py):
the approval queue, starting under policy, the event stream, compliance summaries; entries
paged by index and filtered, inclusion and consistency proofs that verify with nothing but
the log's public key."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from policies.facts import EngineerFacts
from sandbox.ledger import leaf_hash, verify_checkpoint, verify_consistency, verify_inclusion
from sandbox.services import jobs as job_service
from tests.api.conftest import World


def events(text: str) -> list[tuple[str, dict[str, Any], str | None]]:
    """(event, data, id) of a server-sent event stream."""
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"]), fields.get("id")))
    return out


def test_the_queue_approval_and_start_under_policy(world: World) -> None:
    job = world.awaiting_job()
    queue = world.client.get("/approvals", headers=world.headers("regulator")).json()["jobs"]
    assert job in [j["id"] for j in queue]
    # Not before approval: the policy refuses, with the reason.
    early = world.client.post(f"/jobs/{job}/start", headers=world.headers("engineer"))
    assert early.status_code == 403
    assert "no regulator approval" in early.json()["detail"]
    approved = world.client.post(
        f"/approvals/{job}/approve", json=world.approval(job), headers=world.headers("regulator")
    )
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    assert approved.json()["approved_by"] == "reg"
    assert job not in [
        j["id"]
        for j in world.client.get("/approvals", headers=world.headers("regulator")).json()["jobs"]
    ]
    # Allowed now; this server runs no jobs (capacity 0), so it says so and nothing changes.
    busy = world.client.post(f"/jobs/{job}/start", headers=world.headers("engineer"))
    assert busy.status_code == 409 and "at most 0 job" in busy.json()["detail"]
    status = world.client.get(f"/jobs/{job}", headers=world.headers("engineer")).json()
    assert status["status"] == "approved" and status["started_at"] is None


def test_a_rejected_job_needs_a_reason_and_its_stream_ends_at_once(world: World) -> None:
    job = world.awaiting_job()
    empty = world.client.post(
        f"/approvals/{job}/reject", json={"reason": "   "}, headers=world.headers("regulator")
    )
    assert empty.status_code == 422
    rejected = world.client.post(
        f"/approvals/{job}/reject",
        json={"reason": "the purpose is too broad"},
        headers=world.headers("regulator"),
    )
    assert rejected.json()["status"] == "rejected"
    stream = world.client.get(f"/jobs/{job}/events", headers=world.headers("engineer"))
    assert stream.headers["content-type"].startswith("text/event-stream")
    kinds = events(stream.text)
    assert [k for k, _, _ in kinds] == ["status", "end"]
    assert kinds[-1][1]["status"] == "rejected" and kinds[-1][1]["why"] == "the job ended"


def test_the_stream_of_a_waiting_job_is_bounded(world: World) -> None:
    job = world.admitted_job()
    stream = world.client.get(f"/jobs/{job}/events", headers=world.headers("company"))
    kinds = events(stream.text)
    assert kinds[0][0] == "status" and kinds[-1][0] == "end"
    assert "time limit" in kinds[-1][1]["why"]


def test_compliance_summary_points_into_the_ledger(world: World) -> None:
    job = world.awaiting_job()
    world.client.post(
        f"/approvals/{job}/approve", json=world.approval(job), headers=world.headers("regulator")
    )
    summary = world.client.get(f"/jobs/{job}/compliance", headers=world.headers("regulator"))
    assert summary.status_code == 200, summary.text
    body = summary.json()
    assert body["approval_required"] and body["approved_by"] == "reg"
    for fact in (body["admission"], body["approval"]):
        entry = world.gov.ledger.entry(fact["ledger_index"]).record
        assert entry.decision is not None
        assert entry.decision.decision_id == fact["decision_id"] and entry.job_id == job
    assert world.gov.ledger.entry(body["filed_index"]).record.action == "job.filed"
    assert body["ledger"]["complete"] and body["ledger"]["by_action"]["job.approved"]


def test_entries_page_by_index_and_filter(world: World) -> None:
    headers = world.headers("regulator")
    first = world.client.get("/audit/entries?limit=5", headers=headers).json()
    assert [e["index"] for e in first["entries"]] == [0, 1, 2, 3, 4]
    assert first["next_after"] == 4
    second = world.client.get("/audit/entries?limit=5&after=4", headers=headers).json()
    assert second["entries"][0]["index"] == 5
    denials = world.client.get("/audit/entries?decision=deny&limit=50", headers=headers).json()
    assert denials["entries"] and all(
        e["record"]["decision"]["allowed"] is False for e in denials["entries"]
    )
    joins = world.client.get(
        "/audit/entries?action=company.joined&company=transportation", headers=headers
    ).json()["entries"]
    assert [e["record"]["resource"]["id"] for e in joins] == ["transportation"]
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    none = world.client.get(f"/audit/entries?since={future}", headers=headers).json()
    assert none == {"entries": [], "next_after": None}
    for entry in first["entries"]:
        assert bytes.fromhex(entry["leaf_hash"]) == leaf_hash(entry["entry"].encode())


def test_an_entry_proves_into_the_signed_checkpoint_with_the_public_key_alone(
    world: World,
) -> None:
    checkpoint = world.client.get("/audit/checkpoint", headers=world.headers("regulator")).json()
    public_key = base64.b64decode(checkpoint["public_key"])
    index = world.gov.ledger.entries(limit=1, company="construction")[0].index
    # The company proves an entry about itself.
    proof = world.client.get(
        f"/audit/entries/{index}?company=construction", headers=world.headers("company")
    ).json()
    head = verify_checkpoint(proof["checkpoint"], public_key)
    assert head.root.hex() == proof["root"] and head.size == proof["tree_size"]
    leaf = leaf_hash(proof["entry"].encode("utf-8"))
    path = [bytes.fromhex(h) for h in proof["audit_path"]]
    assert verify_inclusion(leaf, index, head.size, path, head.root)
    tampered = proof["entry"].replace("construction", "c0nstruction").encode()
    assert not verify_inclusion(leaf_hash(tampered), index, head.size, path, head.root)
    # An entry that is not about the company is not served to it.
    other = world.gov.ledger.entries(limit=1, company="transportation")[0].index
    hidden = world.client.get(
        f"/audit/entries/{other}?company=construction", headers=world.headers("company")
    )
    assert hidden.status_code == 404


def test_two_checkpoints_are_consistent(world: World) -> None:
    headers = world.headers("regulator")
    old = world.client.get("/audit/checkpoint", headers=headers).json()
    world.admitted_job()
    new = world.client.get("/audit/checkpoint", headers=headers).json()
    assert new["size"] > old["size"]
    proof = world.client.get(
        f"/audit/consistency?old_size={old['size']}&new_size={new['size']}", headers=headers
    ).json()
    key = base64.b64decode(new["public_key"])
    old_head, new_head = verify_checkpoint(old["note"], key), verify_checkpoint(new["note"], key)
    hashes = [bytes.fromhex(h) for h in proof["proof"]]
    assert verify_consistency(old_head.size, new_head.size, old_head.root, new_head.root, hashes)
    beyond = world.client.get(f"/audit/consistency?old_size=1&new_size={10**9}", headers=headers)
    assert beyond.status_code == 422


def test_verify_now(world: World) -> None:
    report = world.client.post("/audit/verify", headers=world.headers("operator")).json()
    assert report["ok"] and report["size"] > 0 and report["problems"] == []


def test_a_tampered_entry_is_served_as_stored_and_fails_to_verify(world: World) -> None:
    """An entry changed in the database behind the ledger's back is still served (never a
    5xx): its bytes, the proof from the stored tree and the checkpoint, marked not intact, so
    that whoever verifies it sees the failure."""
    from sqlalchemy import text

    headers = world.headers("regulator")
    world.admitted_job()
    index = world.gov.ledger.entries(limit=1, action="job.filed")[0].index
    before = world.client.get(f"/audit/entries/{index}", headers=headers).json()
    assert before["intact"] is True and before["problem"] is None
    with world.gov.ledger.engine.begin() as conn:
        conn.execute(
            text("UPDATE ledger_entry SET entry = replace(entry, 'job.filed', 'job.fil3d') "
                 "WHERE idx = :idx"),
            {"idx": index},
        )  # fmt: skip
    try:
        after = world.client.get(f"/audit/entries/{index}", headers=headers)
        assert after.status_code == 200, after.text
        proof = after.json()
        assert proof["intact"] is False and "leaf hash" in proof["problem"]
        assert "job.fil3d" in proof["entry"] and proof["leaf_hash"] == before["leaf_hash"]
        head = verify_checkpoint(proof["checkpoint"], world.gov.ledger.public_key)
        path = [bytes.fromhex(h) for h in proof["audit_path"]]
        assert not verify_inclusion(
            leaf_hash(proof["entry"].encode()), index, head.size, path, head.root
        )
        page = world.client.get(f"/audit/entries?after={index - 1}&limit=1", headers=headers)
        assert page.status_code == 200 and page.json()["entries"][0]["intact"] is False
    finally:
        with world.gov.ledger.engine.begin() as conn:
            conn.execute(
                text("UPDATE ledger_entry SET entry = :entry WHERE idx = :idx"),
                {"entry": before["entry"], "idx": index},
            )


def test_a_role_that_may_not_file_leaves_a_denied_decision_and_no_job(world: World) -> None:
    spec = world.spec(["construction", "transportation"]).model_dump(mode="json")
    before = world.ledger_size
    for role in ("company", "regulator"):
        refused = world.client.post("/jobs", json=spec, headers=world.headers(role))
        assert refused.status_code == 403, refused.text
    decisions = [d for d in world.decisions_since(before) if d["action"] == "decision.submit_job"]
    assert [d["decision"]["allowed"] for d in decisions] == [False, False]
    records = [json.loads(e.entry) for e in world.gov.ledger.entries(after_index=before - 1)]
    assert not [r for r in records if r["action"] == "job.filed"]
    listed = world.client.get("/jobs?limit=500", headers=world.headers("regulator")).json()
    assert not [j for j in listed["jobs"] if j["filed_by"] in ("construction", "reg")]


def test_a_spec_names_only_features_every_participant_has(world: World) -> None:
    spec = world.spec(["construction", "transportation"], features=["age", "shoe_size"])
    answer = world.client.post(
        "/jobs", json=spec.model_dump(mode="json"), headers=world.headers("engineer")
    )
    assert answer.status_code == 422
    assert "features shoe_size are not feature columns of construction/census" in answer.text
    loose = {**spec.model_dump(mode="json"), "features": None, "rounds": "2"}
    answer = world.client.post("/jobs", json=loose, headers=world.headers("engineer"))
    assert answer.status_code == 422 and "rounds" in answer.text


def test_a_repeated_start_runs_the_job_filed_before_and_files_nothing(world: World) -> None:
    """`sandbox federation run --once --spec`: a second `docker compose up` finds the job
    filed with the same spec, runs it if it has not started, and files nothing after it
    completed (so that no privacy budget is spent twice by a restart)."""
    from sandbox.services import runs

    spec = world.spec(["construction", "transportation"], description="once")
    eve = EngineerFacts("eve")
    assert job_service.filed_before(world.gov, eve, spec) is None
    filed = job_service.file_job(world.gov, spec, eve).job
    assert job_service.filed_before(world.gov, eve, spec).id == filed.id
    runs.begin(world.gov.engine, filed.id)
    assert job_service.filed_before(world.gov, eve, spec).status == "running"  # not filed again
    runs.complete(world.gov.engine, filed.id, "ab" * 32, {})
    assert job_service.filed_before(world.gov, eve, spec).status == "completed"
    other = world.spec(["construction", "transportation"], description="another")
    assert job_service.filed_before(world.gov, eve, other) is None
    assert job_service.filed_before(world.gov, EngineerFacts("mallory"), spec) is None
