"""The sandbox's own keys: created on first use, private to their owner, one per role."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sandbox.config import Settings
from sandbox.identity import KeyFileError, public_b64, read_private_key, sandbox_key
from sandbox.ledger import Ledger, verify_checkpoint
from tests.ledger.helpers import fill
from tests.ledger.workers import operator_public_key, worker_context


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("role", ["operator", "regulator"])
def test_keys_are_created_once_with_mode_0600(tmp_settings: Settings, role: str) -> None:
    key = sandbox_key(tmp_settings.keys_dir, role)
    path = tmp_settings.keys_dir / f"{role}.key"
    assert _mode(path) == 0o600
    assert public_b64(sandbox_key(tmp_settings.keys_dir, role)) == public_b64(key)
    assert [p.name for p in tmp_settings.keys_dir.iterdir()] == [f"{role}.key"]  # no leftovers


def test_the_roles_have_different_keys(tmp_settings: Settings) -> None:
    operator = sandbox_key(tmp_settings.keys_dir, "operator")
    regulator = sandbox_key(tmp_settings.keys_dir, "regulator")
    assert public_b64(operator) != public_b64(regulator)
    with pytest.raises(ValueError):
        sandbox_key(tmp_settings.keys_dir, "attacker")


def test_a_key_readable_by_others_is_refused(tmp_settings: Settings) -> None:
    sandbox_key(tmp_settings.keys_dir, "operator")
    path = tmp_settings.keys_dir / "operator.key"
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        read_private_key(path)
    with pytest.raises(KeyFileError):
        sandbox_key(tmp_settings.keys_dir, "operator")


def test_the_ledger_signs_with_the_operator_key_file(tmp_settings: Settings) -> None:
    ledger = Ledger.open(tmp_settings)
    path = tmp_settings.keys_dir / "operator.key"
    assert _mode(path) == 0o600
    fill(ledger, 3)
    note = ledger.checkpoint().note
    assert "PRIVATE" not in note
    file_key = public_b64(read_private_key(path))
    assert verify_checkpoint(note, file_key).size == 3


def test_processes_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    context = worker_context()
    barrier = context.Manager().Barrier(8)
    with context.Pool(8) as pool:
        keys = pool.starmap(operator_public_key, [(str(tmp_path), barrier)] * 8)
    assert len(set(keys)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["operator.key"]
