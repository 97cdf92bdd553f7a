"""Algorithm filing (the code bundle a job may run) and the companies' node keys in the
registry. The refusal at a real node is in ``test_deployment.py``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clients.gate import bundle_refusal
from coordinator.runner import JobRunner
from sandbox import pki
from sandbox.bundle import bundle_of, package_folders, running_bundle
from sandbox.config import Settings
from sandbox.jobspec import JobSpec
from sandbox.learning.encoding import FeatureSpec
from sandbox.registry import service
from sandbox.registry.errors import Conflict, Invalid, NotFound
from tests.test_federated import join


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
    companies = join(sandbox_home, engine, ["Construction", "Education"], rows=60)
    spec = JobSpec(purpose="income-prediction", companies=tuple(companies), rounds=1)
    job = service.file_job(engine, spec, filed_by="engineer")
    assert job.bundle_hash == running_bundle().digest
    assert service.get_job(engine, job.id).bundle_hash == running_bundle().digest

    runner = JobRunner(sandbox_home, engine, None, job.id)  # type: ignore[arg-type]
    plan = runner.base_plan(FeatureSpec.from_manifests(runner.manifests(), spec.features))
    assert plan.code_bundle == running_bundle().digest
    assert bundle_refusal(plan) is None

    other = service.file_job(engine, spec, filed_by="engineer", bundle_hash="ab" * 32)
    runner = JobRunner(sandbox_home, engine, None, other.id)  # type: ignore[arg-type]
    plan = runner.base_plan(FeatureSpec.from_manifests(runner.manifests(), spec.features))
    refusal = bundle_refusal(plan)
    assert refusal is not None and "is not the code filed for job" in refusal
    unfiled = plan.model_copy(update={"code_bundle": None})
    assert "no filed code bundle" in (bundle_refusal(unfiled) or "")


def test_a_filing_is_never_replaced_and_must_match_the_spec(sandbox_home: Settings, engine) -> None:
    companies = join(sandbox_home, engine, ["Construction"], rows=60)
    spec = JobSpec(purpose="income-prediction", companies=tuple(companies), min_participants=1)
    job = service.file_job(engine, spec, filed_by="engineer")
    # Filing the same bundle again is harmless; another bundle is refused.
    service.file_algorithm(engine, job.id, job.bundle_hash or "", job.spec_hash)
    with pytest.raises(Conflict, match="already has a filed code bundle"):
        service.file_algorithm(engine, job.id, "cd" * 32, job.spec_hash)
    with pytest.raises(Conflict, match="another spec"):
        service.file_algorithm(engine, job.id, job.bundle_hash or "", "00" * 32)
    with pytest.raises(Invalid):
        service.file_job(engine, spec, filed_by="engineer", bundle_hash="not-a-hash")
    with pytest.raises(NotFound):
        service.file_algorithm(engine, "job-missing", "ab" * 32, job.spec_hash)


def test_node_keys_in_the_registry(sandbox_home: Settings, engine, tmp_path: Path) -> None:
    first, second = join(sandbox_home, engine, ["Construction", "Education"], rows=60)
    key_a = pki.generate_node_auth_key(tmp_path / "a.key", "a")
    key_b = pki.generate_node_auth_key(tmp_path / "b.key", "b")
    record = service.set_node_key(engine, first, f"{key_a} comment")
    assert record.public_key == key_a and record.fingerprint == pki.node_key_fingerprint(key_a)
    assert service.set_node_key(engine, first, key_a).public_key == key_a  # idempotent
    with pytest.raises(Conflict, match="another company's"):
        service.set_node_key(engine, second, key_a)
    with pytest.raises(Conflict, match="already has another node key"):
        service.set_node_key(engine, first, key_b)
    with pytest.raises(Invalid):
        service.set_node_key(engine, second, "ssh-ed25519 AAAA")
    with pytest.raises(NotFound):
        service.set_node_key(engine, "nobody", key_b)

    registered = service.record_node_registration(
        engine, first, key_a, "127.0.0.1:9092", "16084083815596862012"
    )
    assert registered.flower_node_id == "16084083815596862012"
    with pytest.raises(Conflict, match="not the one registered"):
        service.record_node_registration(engine, first, key_b, "127.0.0.1:9092", "1")
    # A rotated key voids the registration of the old one.
    rotated = service.set_node_key(engine, first, key_b, replace=True)
    assert rotated.flower_node_id is None and rotated.superlink is None
    assert [k.company_id for k in service.list_node_keys(engine)] == [first]
