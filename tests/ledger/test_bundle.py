"""Export bundles: self-describing, and checkable with nothing but the files and a key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandbox.config import Settings
from sandbox.db import dispose_engines
from sandbox.identity import public_b64
from sandbox.ledger import Ledger, canonical_entry, leaf_hash, verify_bundle
from sandbox.ledger.merkle import CompactRange
from tests.ledger.helpers import fill, make_record, open_ledger
from tests.ledger.test_tamper import cli

REPO = Path(__file__).resolve().parents[2]
SIZE = 40


@pytest.fixture
def ledger(tmp_settings: Settings) -> Ledger:
    ledger = open_ledger(tmp_settings)
    for start in range(0, SIZE, 10):
        fill(ledger, 10, start=start)
        ledger.checkpoint()
    return ledger


@pytest.fixture
def bundle(ledger: Ledger, tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    ledger.export_bundle(out)
    return out


def _lines(bundle: Path, name: str) -> list[bytes]:
    return (bundle / name).read_bytes().splitlines(keepends=True)


def _write(bundle: Path, name: str, lines: list[bytes]) -> None:
    (bundle / name).write_bytes(b"".join(lines))


def test_the_bundle_describes_itself(bundle: Path, ledger: Ledger) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["format"] == "sandbox-ledger-bundle"
    assert manifest["tree_size"] == SIZE
    assert manifest["root_hex"] == ledger.root(SIZE).hex()
    assert manifest["public_key"]["base64"] == ledger.public_key_b64
    assert manifest["public_key"]["verifier_key"] == ledger.verifier_key
    assert "SHA-256(0x00 || entry bytes)" in manifest["hashing"]["leaf"]
    for name, described in manifest["files"].items():
        assert (bundle / name).stat().st_size == described["bytes"]
        assert described["describes"]
    entries = _lines(bundle, "entries.jsonl")
    assert len(entries) == SIZE
    assert entries[7] == canonical_entry(make_record(7)) + b"\n"
    schema = json.loads((bundle / "record-schema.json").read_text())
    assert schema["title"] == "LedgerRecord"
    checkpoints = [json.loads(line) for line in _lines(bundle, "checkpoints.jsonl")]
    assert [item["size"] for item in checkpoints] == [10, 20, 30, 40]


def test_a_clean_bundle_verifies_without_the_database(
    bundle: Path, ledger: Ledger, tmp_settings: Settings
) -> None:
    key = ledger.public_key_b64
    dispose_engines()
    (tmp_settings.home / "sandbox.db").unlink()
    report = verify_bundle(bundle, key)
    assert report.ok and report.size == SIZE and report.attested_size == SIZE
    assert report.checkpoints == 4
    assert not (tmp_settings.home / "sandbox.db").exists()


def test_verify_bundle_as_a_separate_process(bundle: Path, ledger: Ledger, tmp_path: Path) -> None:
    """The regulator's run: a fresh process, an empty home, a key file and the bundle."""
    key_file = tmp_path / "operator.pub"
    key_file.write_text(ledger.verifier_key + "\n")
    empty_home = tmp_path / "regulator"
    env = {**os.environ, "PYTHONPATH": str(REPO), "SANDBOX_HOME": str(empty_home)}
    env.pop("SANDBOX_DATABASE_URL", None)
    command = [sys.executable, "-m", "sandbox.cli", "audit", "verify-bundle", str(bundle)]
    ok = subprocess.run([*command, "--key", str(key_file)], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    assert not empty_home.exists()  # no database, no keys: nothing was created

    lines = _lines(bundle, "entries.jsonl")
    lines[33] = lines[33].replace(b"job-5", b"job-6")
    _write(bundle, "entries.jsonl", lines)
    bad = subprocess.run(
        [*command, "--key", str(key_file)], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert "first bad index: 33" in bad.stdout


def change_field(bundle: Path) -> int:
    lines = _lines(bundle, "entries.jsonl")
    lines[17] = lines[17].replace(b"job-3", b"job-9")
    _write(bundle, "entries.jsonl", lines)
    return 17


def delete_line(bundle: Path) -> int:
    for name in ("entries.jsonl", "hashes.jsonl"):
        lines = _lines(bundle, name)
        del lines[23]
        _write(bundle, name, lines)
    return 23


def delete_entry_line_only(bundle: Path) -> int:
    lines = _lines(bundle, "entries.jsonl")
    del lines[3]
    _write(bundle, "entries.jsonl", lines)
    return 3


def swap_lines(bundle: Path) -> int:
    for name in ("entries.jsonl", "hashes.jsonl"):
        lines = _lines(bundle, name)
        lines[5], lines[9] = lines[9], lines[5]
        _write(bundle, name, lines)
    return 5


def swap_entry_lines_only(bundle: Path) -> int:
    lines = _lines(bundle, "entries.jsonl")
    lines[12], lines[31] = lines[31], lines[12]
    _write(bundle, "entries.jsonl", lines)
    return 12


def insert_line(bundle: Path) -> int:
    forged = canonical_entry(make_record(500, job_id="job-forged"))
    lines = _lines(bundle, "entries.jsonl")
    lines.insert(15, forged + b"\n")
    _write(bundle, "entries.jsonl", lines)
    return 15


def append_line(bundle: Path) -> int:
    forged = canonical_entry(make_record(500))
    _write(bundle, "entries.jsonl", [*_lines(bundle, "entries.jsonl"), forged + b"\n"])
    return SIZE


def truncate(bundle: Path) -> int:
    for name in ("entries.jsonl", "hashes.jsonl"):
        _write(bundle, name, _lines(bundle, name)[:35])
    return 35


def forge_and_rewrite_hashes(bundle: Path) -> int:
    """Rewrite entry 26 and recompute hashes.jsonl: only the signed root at 30 can tell."""
    lines = _lines(bundle, "entries.jsonl")
    lines[26] = canonical_entry(make_record(26, job_id="job-forged")) + b"\n"
    _write(bundle, "entries.jsonl", lines)
    tree, hashes = CompactRange.empty(), []
    for index, line in enumerate(lines):
        leaf = leaf_hash(line[:-1])
        tree.append(leaf)
        item = {"index": index, "leaf_hash": leaf.hex(), "tree_root": tree.root().hex()}
        hashes.append(json.dumps(item).encode() + b"\n")
    _write(bundle, "hashes.jsonl", hashes)
    return 20


def forge_without_hashes(bundle: Path) -> int:
    (bundle / "hashes.jsonl").unlink()
    change_field(bundle)
    return 10


BUNDLE_TAMPERINGS: list[Callable[[Path], int]] = [
    change_field,
    delete_line,
    delete_entry_line_only,
    swap_lines,
    swap_entry_lines_only,
    insert_line,
    append_line,
    truncate,
    forge_and_rewrite_hashes,
    forge_without_hashes,
]


@pytest.mark.parametrize("tamper", BUNDLE_TAMPERINGS, ids=lambda tamper: tamper.__name__)
def test_verify_bundle_names_the_first_bad_index(
    bundle: Path, ledger: Ledger, tamper: Callable[[Path], int]
) -> None:
    first_bad = tamper(bundle)
    report = verify_bundle(bundle, ledger.public_key_b64)
    assert not report.ok
    assert report.first_bad_index == first_bad, report.problems
    code, output = cli("verify-bundle", str(bundle), "--key", ledger.public_key_b64)
    assert code == 1
    assert f"first bad index: {first_bad}" in output


def test_a_bundle_checked_with_another_key_fails(bundle: Path) -> None:
    other = public_b64(Ed25519PrivateKey.generate())
    report = verify_bundle(bundle, other)
    assert not report.ok and report.checkpoints == 0
    code, output = cli("verify-bundle", str(bundle), "--key", other)
    assert code == 1 and "verifies with the given key" in output and "first bad" not in output


def test_a_changed_checkpoint_note_fails(bundle: Path, ledger: Ledger) -> None:
    lines = _lines(bundle, "checkpoints.jsonl")
    lines[1] = lines[1].replace(b"\\n20\\n", b"\\n21\\n")
    _write(bundle, "checkpoints.jsonl", lines)
    report = verify_bundle(bundle, ledger.public_key_b64)
    assert not report.ok
    assert any("checkpoint at size 20" in problem for problem in report.problems)


def test_unusable_input_is_an_error_not_a_pass(
    bundle: Path, ledger: Ledger, tmp_path: Path
) -> None:
    code, output = cli("verify-bundle", str(tmp_path / "nowhere"), "--key", ledger.public_key_b64)
    assert code == 2 and "not a folder" in output
    code, output = cli("verify-bundle", str(bundle), "--key", "not-a-key")
    assert code == 2 and "unusable public key" in output
    (bundle / "manifest.json").unlink()
    code, output = cli("verify-bundle", str(bundle), "--key", ledger.public_key_b64)
    assert code == 1 and "manifest.json" in output


def test_export_refuses_a_folder_in_use(ledger: Ledger, bundle: Path) -> None:
    code, output = cli("export", "--out", str(bundle))
    assert code == 2 and "not empty" in output


@pytest.mark.parametrize(
    "change",
    [
        {"public_key": "not a dict"},
        {"tree_size": "40"},
        {"files": []},
        {"format_version": 2},
        {"format": "something-else"},
    ],
    ids=repr,
)
def test_a_malformed_manifest_fails_cleanly(bundle: Path, ledger: Ledger, change: dict) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text()) | change
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    report = verify_bundle(bundle, ledger.public_key_b64)
    assert not report.ok and report.first_bad_index is None


def test_the_manifest_cannot_point_outside_the_bundle(bundle: Path, ledger: Ledger) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["../../secret"] = {"sha256": "0" * 64}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    report = verify_bundle(bundle, ledger.public_key_b64)
    assert not report.ok
    assert report.problems == ["the manifest lists an unknown file '../../secret'"]
