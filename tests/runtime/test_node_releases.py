"""What leaves a company's node in a high-tier job (DP and SecAgg+), seen at the node's own
edge: every message each node sends is captured and checked against the release inventory,
no exact per-company statistic leaves, the node's epsilon for the job equals an independent
computation by Opacus' RDP accountant, and the job's receipts check offline against its
warrant with public keys only."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from opacus.accountants import RDPAccountant
from typer.testing import CliRunner

from clients.accountant import privacy_path
from clients.app import make_client_app
from clients.inventory import check_wire, describe
from sandbox import identity
from sandbox.cli import app as cli_app
from sandbox.config import Settings
from sandbox.node.home import NodeHome
from sandbox.registry import jobs as job_store
from tests.adversarial.nodes import HIGH, HIGH_TIER_JOB
from tests.support.world import file_runnable, join

pytestmark = pytest.mark.slow


def capturing(folder: Path) -> Callable[[Sequence[str]], ClientApp]:
    """The companies' own app, with every message it sends written down at its edge."""

    def factory(node_dirs: Sequence[str]) -> ClientApp:
        honest = make_client_app(node_dirs)
        companies = [NodeHome(Path(d)).company_id for d in node_dirs]
        app = ClientApp()

        def record(message: Message, context: Context, reply: Message) -> Message:
            company = companies[int(context.node_config["partition-id"])]
            config = message.content.config_records
            task = (
                str(config["config"]["task"])
                if "config" in config
                else message.metadata.message_type
            )
            line = {
                "company": company,
                "task": task,
                "type": message.metadata.message_type,
                "error": reply.has_error(),
                "records": {} if reply.has_error() else describe(reply.content),
            }
            with (folder / f"{company}.jsonl").open("a") as out:
                out.write(json.dumps(line) + "\n")
            return reply

        @app.query()
        def query(message: Message, context: Context) -> Message:
            return record(message, context, honest(message, context))

        @app.train()
        def train(message: Message, context: Context) -> Message:
            return record(message, context, honest(message, context))

        @app.evaluate()
        def evaluate(message: Message, context: Context) -> Message:
            return record(message, context, honest(message, context))

        return app

    return factory


def test_what_leaves_each_node_in_a_high_tier_job(
    sandbox_home: Settings, engine: Any, tmp_path: Path
) -> None:
    companies = join(sandbox_home, engine, HIGH, rows=160)
    job = file_runnable(sandbox_home, {**HIGH_TIER_JOB, "companies": companies})
    captured = tmp_path / "captured"
    captured.mkdir()
    from sandbox.runtime.simulation import run_jobs_on_simulation

    outcome = run_jobs_on_simulation(sandbox_home, [job.id], company_app=capturing(captured))[
        job.id
    ]
    assert outcome["status"] == "completed", outcome

    # Every message each node sent is in the release inventory; nothing exact leaves.
    for company in companies:
        lines = [json.loads(x) for x in (captured / f"{company}.jsonl").read_text().splitlines()]
        assert lines, company
        tasks = {line["task"] for line in lines}
        assert "feature-stats" not in tasks
        for line in lines:
            assert not line["error"], line
            problems = check_wire(line["task"], line["records"], dp=True, secure=True)
            assert problems == [], (company, line, problems)
            for name, record in line["records"].items():
                assert not name.startswith("stats"), line
                assert "loss" not in record["fields"] or line["task"] != "train", line

    # The node's own account: its epsilon for the job, against Opacus' RDP accountant
    # stepped through every DP release it made (the baseline and each round).
    receipts = job_store.receipts_of_job(engine, job.id)
    for company in companies:
        node = NodeHome(sandbox_home.company_dir(company))
        account = json.loads(privacy_path(node, "census").read_text())
        runs = [r for r in account["runs"] if r["job"] == job.id]
        assert {r["kind"] for r in runs} == {"baseline", "train"}
        accountant = RDPAccountant()
        accountant.history = [(r["noise_multiplier"], r["sample_rate"], r["steps"]) for r in runs]
        independent = accountant.get_epsilon(runs[-1]["delta"])
        node_total = runs[-1]["epsilon_job"]
        assert node_total == pytest.approx(independent, rel=0.01)
        assert node_total <= HIGH_TIER_JOB["privacy"]["dp"]["epsilon"] + 1e-9
        mine = [json.loads(r.payload) for r in receipts if r.company_id == company]
        stated = [r["epsilon_job"] for r in mine if r.get("epsilon_job") is not None]
        assert stated and max(stated) == pytest.approx(node_total, rel=1e-9)

    # The job's receipts check offline against its warrant, with public keys only.
    evidence = tmp_path / "receipts.json"
    runner = CliRunner()
    exported = runner.invoke(cli_app, ["audit", "receipts", job.id, "--out", str(evidence)])
    assert exported.exit_code == 0, exported.output
    keys = tmp_path / "keys"
    keys.mkdir()
    for role in ("operator", "regulator"):
        key = identity.sandbox_key(sandbox_home.keys_dir, role)
        (keys / f"{role}.pub").write_text(identity.public_b64(key) + "\n")
    check = [
        "audit", "check-receipts", str(evidence),
        "--operator-key", str(keys / "operator.pub"), "--regulator-key", str(keys / "regulator.pub"),
    ]  # fmt: skip
    checked = runner.invoke(cli_app, check)
    assert checked.exit_code == 0, checked.output
    assert f"{len(receipts)} receipts" in checked.output
    # One receipt changed by a byte, or the wrong operator key: the check fails and says so.
    document = json.loads(evidence.read_text())
    document["receipts"][0]["payload"] = document["receipts"][0]["payload"].replace(
        '"rows":', '"rows": '
    )
    evidence.write_text(json.dumps(document))
    assert runner.invoke(cli_app, check).exit_code == 1
    (keys / "operator.pub").write_text(identity.public_b64(identity.generate_key()) + "\n")
    assert runner.invoke(cli_app, check).exit_code == 1
