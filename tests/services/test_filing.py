"""Algorithm filing (the code bundle a job may run) and the companies' node keys in the
registry. The refusal at a real node is in ``test_deployment.py``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clients.gate import shipped_policy_set
from clients.mandate import Refusal, mandate_for
from coordinator.runner import JobRunner
from sandbox.config import Settings
from sandbox.errors import Conflict, Forbidden, Invalid, NotFound
from sandbox.governance import get_governance
from sandbox.identity import pki
from sandbox.learning.encoding import FeatureSpec
from sandbox.node.home import NodeHome
from sandbox.protocol.bundle import bundle_of, package_folders, running_bundle
from sandbox.protocol.jobspec import JobSpec
from sandbox.registry import jobs as job_store
from sandbox.registry import nodes as node_store
from sandbox.services import jobs as job_service
from sandbox.services import nodes, principals, runs
from tests.support.world import ENGINEER, join


@pytest.fixture
def code_copy(tmp_path: Path) -> dict[str, Path]:
    """A copy of the bundle's packages, as another machine might have installed them."""
    copies = {}
    for name, folder in package_folders().items():
        copies[name] = tmp_path / "code" / name
        shutil.copytree(folder, copies[name], ignore=shutil.ignore_patterns("__pycache__"))
    return copies


def test_the_same_code_has_the_same_bundle_hash(code_copy: dict[str, Path]) -> None:
    assert bundle_of(code_copy).digest == running_bundle().digest
    cache = code_copy["clients"] / "__pycache__"
    cache.mkdir()
    (cache / "gate.cpython-311.pyc").write_bytes(b"compiled")
    (code_copy["sandbox"] / ".swp").write_text("editor leftovers")
    assert bundle_of(code_copy).digest == running_bundle().digest


@pytest.mark.parametrize(
    "change",
    ["edit", "add", "remove", "policy"],
)
def test_any_change_to_the_code_changes_the_bundle_hash(
    code_copy: dict[str, Path], change: str
) -> None:
    work = code_copy["clients"] / "work.py"
    if change == "edit":
        work.write_text(work.read_text().replace("rows never leave", "rows may leave"))
        expected = ["clients/work.py"]
    elif change == "add":
        (code_copy["clients"] / "extra.py").write_text("import os\n")
        expected = ["clients/extra.py"]
    elif change == "remove":
        work.unlink()
        expected = ["clients/work.py"]
    else:
        policy = code_copy["policies"] / "baseline.cedar"
        policy.write_text(policy.read_text() + "\n// changed\n")
        expected = ["policies/baseline.cedar"]
    altered = bundle_of(code_copy)
    assert altered.digest != running_bundle().digest
    assert altered.differences(running_bundle()) == expected


def test_a_filed_job_carries_its_bundle_into_the_plan_and_the_gate_checks_it(
    sandbox_home: Settings, engine
) -> None:
    gov = get_governance(sandbox_home)
    companies = join(sandbox_home, engine, ["Construction", "Agriculture"], rows=60)
    spec = JobSpec.model_validate(
        {
            "purpose": "income-prediction",
            "companies": companies,
            "rounds": 1,
            "privacy": {"dp": {"epsilon": 2.0}},
        }
    )
    job = job_service.file_job(gov, spec, ENGINEER).job
    assert job.status == "admitted" and job.warrant is not None
    assert job.bundle_hash == running_bundle().digest
    assert job_store.get_job(engine, job.id).bundle_hash == running_bundle().digest

    runner = JobRunner(sandbox_home, engine, None, job.id)  # type: ignore[arg-type]
    manifests = runs.manifests(engine, job)
    plan = runner.ctx.base_plan(FeatureSpec.from_manifests(manifests, spec.features))
    assert plan.code_bundle == running_bundle().digest
    node = NodeHome(sandbox_home.company_dir(companies[0]))
    tiers = shipped_policy_set().tiers
    mandate = mandate_for(node, plan, job.warrant, tiers)
    assert mandate.warrant.code_bundle == running_bundle().digest

    other = job_service.file_job(gov, spec, ENGINEER, bundle_hash="ab" * 32).job
    runner = JobRunner(sandbox_home, engine, None, other.id)  # type: ignore[arg-type]
    plan = runner.ctx.base_plan(FeatureSpec.from_manifests(manifests, spec.features))
    with pytest.raises(Refusal) as refused:
        mandate_for(node, plan, other.warrant, tiers)
    assert refused.value.cause == "code-bundle"
    assert "is not the code filed for job" in refused.value.reason


def test_a_filing_needs_a_bundle_hash_and_a_new_job_id(sandbox_home: Settings, engine) -> None:
    gov = get_governance(sandbox_home)
    companies = join(sandbox_home, engine, ["Construction"], rows=60)
    spec = JobSpec(purpose="income-prediction", companies=tuple(companies), min_participants=1)
    job = job_service.file_job(gov, spec, ENGINEER).job
    size = gov.ledger.size
    with pytest.raises(Invalid, match="code bundle hash"):
        job_service.file_job(gov, spec, ENGINEER, bundle_hash="not-a-hash")
    with pytest.raises(Conflict, match="filed already"):
        job_service.file_job(gov, spec, ENGINEER, job_id=job.id)
    # Refused filings leave the job as it was filed.
    assert job_store.get_job(engine, job.id).bundle_hash == running_bundle().digest
    assert gov.ledger.size > size  # each attempt's admission decision is recorded


def test_node_keys_are_recorded_by_the_operator(
    sandbox_home: Settings, engine, tmp_path: Path
) -> None:
    gov = get_governance(sandbox_home)
    operator = principals.operator(gov)
    first, second = join(sandbox_home, engine, ["Construction", "Education"], rows=60)
    key_a = pki.generate_node_auth_key(tmp_path / "a.key", "a")
    key_b = pki.generate_node_auth_key(tmp_path / "b.key", "b")
    size = gov.ledger.size
    record = nodes.record_node_key(gov, operator, first, f"{key_a} comment")
    assert record.public_key == key_a and record.fingerprint == pki.node_key_fingerprint(key_a)
    actions = [e.record.action for e in gov.ledger.entries(after_index=size - 1)]
    assert actions == ["decision.register_node_key", "node_key.recorded"]
    assert nodes.record_node_key(gov, operator, first, key_a).public_key == key_a  # idempotent
    with pytest.raises(Conflict, match="another company's"):
        nodes.record_node_key(gov, operator, second, key_a)
    with pytest.raises(Conflict, match="already has another node key"):
        nodes.record_node_key(gov, operator, first, key_b)
    with pytest.raises(Invalid):
        nodes.record_node_key(gov, operator, second, "ssh-ed25519 AAAA")
    with pytest.raises(NotFound):
        nodes.record_node_key(gov, operator, "nobody", key_b)
    with pytest.raises(Forbidden):  # only the operator records node keys
        nodes.record_node_key(gov, ENGINEER, second, key_b)

    registered = nodes.record_registration(
        gov, operator, first, key_a, "127.0.0.1:9092", "16084083815596862012"
    )
    assert registered.flower_node_id == "16084083815596862012"
    with pytest.raises(Conflict, match="not the one registered"):
        nodes.record_registration(gov, operator, first, key_b, "127.0.0.1:9092", "1")
    # A rotated key voids the registration of the old one.
    rotated = nodes.record_node_key(gov, operator, first, key_b, replace=True)
    assert rotated.flower_node_id is None and rotated.superlink is None
    assert [k.company_id for k in node_store.list_node_keys(engine)] == [first]
