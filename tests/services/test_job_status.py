"""A job's status moves only along the vocabulary's transition table, and only the services
move it: no face, no runner and no composition code sets a status by hand."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from policies.facts import EngineerFacts
from sandbox.config import Settings
from sandbox.governance import get_governance
from sandbox.registry import jobs as store
from sandbox.services import jobs
from sandbox.vocabulary import RUNNABLE, TRANSITIONS, JobStatus, may_move
from tests.support.world import join

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("sandbox", "coordinator", "clients", "policies")
MOVERS = {"move_job", "insert_job"}
"""The repository's only verbs that write a job's status."""
MAY_MOVE = {"sandbox/services", "sandbox/registry"}
"""The services move jobs; the repository writes the rows they ask it to."""


def test_every_status_has_its_transitions_and_the_end_states_have_none() -> None:
    assert set(TRANSITIONS) == set(JobStatus)
    for end in (JobStatus.COMPLETED, JobStatus.DENIED, JobStatus.REJECTED):
        assert not TRANSITIONS[end]
        assert end not in RUNNABLE
    assert may_move("approved", "running") and not may_move("awaiting_approval", "running")
    assert not may_move("completed", "running") and not may_move("denied", "approved")


def test_a_move_the_table_forbids_is_refused(sandbox_home: Settings, engine) -> None:
    companies = join(sandbox_home, engine, ["Construction", "Retail trade"], rows=60)
    spec = {
        "purpose": "income-prediction",
        "companies": companies,
        "privacy": {"dp": {"epsilon": 5.0}},
    }
    from sandbox.protocol.jobspec import JobSpec

    filed = jobs.file_job(
        get_governance(sandbox_home), JobSpec.model_validate(spec), EngineerFacts("eve")
    )
    assert filed.job.status == JobStatus.ADMITTED
    for forbidden in (JobStatus.APPROVED, JobStatus.COMPLETED, JobStatus.REJECTED):
        assert store.move_job(engine, filed.job.id, forbidden) is None
    assert store.get_job(engine, filed.job.id).status == JobStatus.ADMITTED
    moved = store.move_job(engine, filed.job.id, JobStatus.RUNNING)
    assert moved is not None and moved.status == JobStatus.RUNNING


def _is_a_status(value: ast.expr) -> bool:
    """A job status written out: a string, or a member of ``JobStatus``."""
    if isinstance(value, ast.Constant):
        return isinstance(value.value, str)
    return isinstance(value, ast.Attribute) and getattr(value.value, "id", "") == "JobStatus"


def _writes_of_status(path: Path) -> list[str]:
    """Where a module writes a job's status: a call to a repository verb that does, or an
    assignment of a status to a ``status`` attribute."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            if name in MOVERS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} calls {name}")
        if isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr == "status"
                    and _is_a_status(node.value)
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} assigns .status")
    return found


@pytest.mark.parametrize("package", PRODUCT)
def test_no_status_is_set_by_hand_outside_the_services(package: str) -> None:
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        if any(where == allowed or where.startswith(allowed + "/") for allowed in MAY_MOVE):
            continue
        offenders += _writes_of_status(path)
    assert offenders == []


def test_the_check_finds_a_status_set_by_hand(tmp_path: Path) -> None:
    """The check above can fail: a module that moves a job itself is caught."""
    rogue = ROOT / "tests" / "services" / "_rogue_sample.py"
    rogue.write_text(
        "def f(job, store):\n    job.status = 'completed'\n    store.move_job(1, 2, 3)\n"
    )
    try:
        assert len(_writes_of_status(rogue)) == 2
    finally:
        rogue.unlink()
