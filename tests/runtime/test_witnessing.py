"""The companies' nodes witness the ledger (C2SP tlog-witness, cosignature/v1), on the
simulation engine: with each evaluation every node cosigns the newest checkpoint when it
extends the one it cosigned before; the cosignatures travel in the checkpoints' notes and an
export verifies with a quorum of witness keys. When the operator, holding the key, rewrites
the history and re-signs it, every node that had cosigned refuses, keeps both signed notes
and raises its alarm."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from sandbox.cli import app as cli_app
from sandbox.config import Settings
from sandbox.governance import get_governance
from sandbox.ledger import Ledger
from sandbox.ledger.bundle import verify_bundle
from sandbox.ledger.witness import Witness, WitnessKey, witnessed_by
from sandbox.node.home import NodeHome
from sandbox.registry.companies import get_company
from sandbox.registry.jobs import receipts_of_job
from sandbox.runtime.simulation import run_jobs_on_simulation
from tests.ledger.helpers import rehash_everything
from tests.support.world import file_runnable, join

pytestmark = pytest.mark.slow

INDUSTRIES = ["Construction", "Retail trade", "Transportation"]
JOB: dict[str, Any] = {
    "purpose": "income-prediction",
    "rounds": 2,
    "local_epochs": 1,
    "min_participants": 2,
    "privacy": {"dp": {"epsilon": 3.0}},
}


def witness(settings: Settings, company: str) -> Witness:
    node = NodeHome(settings.company_dir(company))
    ledger = get_governance(settings).ledger
    return Witness(node.folder / "witness", company, node.key(), ledger.origin,
                   ledger.public_key_b64)  # fmt: skip


def test_nodes_cosign_and_refuse_a_re_signed_rewrite(
    sandbox_home: Settings, engine: Any, tmp_path: Path
) -> None:
    companies = join(sandbox_home, engine, INDUSTRIES, rows=200)
    job = file_runnable(sandbox_home, {**JOB, "companies": companies})
    outcome = run_jobs_on_simulation(sandbox_home, [job.id])[job.id]
    assert outcome["status"] == "completed", outcome

    ledger = get_governance(sandbox_home).ledger
    keys = [WitnessKey(c, get_company(engine, c).public_key) for c in companies]
    counts = [len(witnessed_by(cp.note, keys)) for cp in ledger.checkpoints()]
    assert max(counts) == len(companies), counts  # every node cosigned a checkpoint
    for company in companies:
        held = witness(sandbox_home, company).latest()
        assert held is not None and held[0].size > 0
        assert witness(sandbox_home, company).alarms() == []
    # Receipts pin the ledger: the later ones name a checkpoint the node cosigned, whose
    # root is the ledger's at that size.
    pinned = [json.loads(r.payload).get("ledger") for r in receipts_of_job(engine, job.id)]
    named = [p for p in pinned if p]
    assert named, pinned
    for stated in named:
        size, root = stated.split(" ")
        assert ledger.root(int(size)) == base64.b64decode(root)
    shown = CliRunner().invoke(cli_app, ["company", "witness", companies[0]])
    assert shown.exit_code == 0 and "last cosigned" in shown.output, shown.output

    # An export verifies with a quorum of the nodes' witness keys, not with strangers'.
    bundle = tmp_path / "bundle"
    runner = CliRunner()
    assert runner.invoke(cli_app, ["audit", "export", "--out", str(bundle)]).exit_code == 0
    args = [f"{k.name}={k.public_key}" for k in keys]
    witnessed = [a for x in args for a in ("--witness-key", x)]
    check = ["audit", "verify-bundle", str(bundle), "--key", ledger.public_key_b64]
    ok = runner.invoke(cli_app, [*check, *witnessed, "--quorum", "1"])
    assert ok.exit_code == 0, ok.output
    stranger = WitnessKey("construction", keys[1].public_key)  # another company's key
    assert not verify_bundle(bundle, ledger.public_key, witnesses=[stranger], quorum=1).ok

    # The operator rewrites an early entry, re-hashes, forgets the signer's state and
    # re-signs: the next job's evaluations show the nodes a forged history.
    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE ledger_entry SET entry = replace(entry, 'income-prediction', "
                          "'income-predictioN') WHERE idx = 3"))  # fmt: skip
    rehash_everything(ledger.engine)
    with ledger.engine.begin() as conn:
        conn.execute(text("DELETE FROM ledger_checkpoint"))
    Path(ledger._signer.path).unlink()
    Ledger.open(sandbox_home).checkpoint()
    again = file_runnable(sandbox_home, {**JOB, "companies": companies})
    run_jobs_on_simulation(sandbox_home, [again.id])
    for company in companies:
        alarms = witness(sandbox_home, company).alarms()
        assert alarms, company
        assert alarms[0]["cosigned"] != alarms[0]["shown"]
        assert "rewritten" in alarms[0]["problem"] or "split view" in alarms[0]["problem"]
    # The ledger records each node's alarm, where the API and the console show it.
    recorded = Ledger.open(sandbox_home).entries(action="ledger.witness_alarm", limit=100)
    assert {json.loads(e.entry)["actor"]["principal"] for e in recorded} == set(companies)
    # The company sees it on its next use of the CLI.
    alarmed = CliRunner().invoke(cli_app, ["company", "witness", companies[0]])
    assert alarmed.exit_code == 1 and "ALARM" in alarmed.output
    other = CliRunner().invoke(cli_app, ["company", "refusals", companies[0]])
    assert f"LEDGER ALARM: the node of {companies[0]} refused" in other.output
