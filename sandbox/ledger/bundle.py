"""Export bundles: the whole ledger up to a signed checkpoint, checkable offline with a key.

A bundle is a folder of plain files (described again in its ``manifest.json``):

- ``entries.jsonl``: line ``i`` (from 0) holds the exact bytes of entry ``i``, the record's
  RFC 8785 canonical JSON, followed by a newline that is not part of the entry.
- ``hashes.jsonl``: line ``i`` is ``{"index": i, "leaf_hash": hex, "tree_root": hex}``, the
  leaf hash of entry ``i`` and the root of the tree of entries ``0..i`` as the log stored them.
  They are unsigned; they only let a verifier name the first entry that was changed.
- ``checkpoints.jsonl``: every checkpoint up to the bundle's size, each line
  ``{"size": n, "root": base64, "note": signed note}``. Only the notes' signatures count.
- ``public_key.txt``: the operator's Ed25519 public key (base64 of the raw 32 bytes). A
  verifier must compare it with a key it obtained independently, or simply use its own.
- ``record-schema.json``: the JSON schema of the records.
- ``problems.json`` (only when the ledger failed verification at export): each problem found,
  ``{"index", "kind", "message"}``. Such a bundle holds the entries and checkpoints exactly as
  stored, and no checkpoint was signed for it.

Verification needs nothing but this folder and the operator's public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from itertools import zip_longest
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sandbox.canonical import canonical_json
from sandbox.identity import public_b64, public_bytes
from sandbox.ledger.checkpoint import (
    SignedCheckpoint,
    check_origin,
    load_public_key,
    note_key_id,
    verifier_key,
)
from sandbox.ledger.errors import BundleError, CheckpointError
from sandbox.ledger.records import SCHEMA_VERSION, LedgerRecord
from sandbox.ledger.verify import (
    ClaimedCheckpoint,
    Findings,
    Progress,
    Replay,
    VerificationReport,
    add_pins,
    verified_checkpoints,
)
from sandbox.ledger.witness import WitnessKey, witnessed_by
from sandbox.utc import utcnow

BUNDLE_FORMAT = "sandbox-ledger-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
ENTRIES = "entries.jsonl"
HASHES = "hashes.jsonl"
CHECKPOINTS = "checkpoints.jsonl"
PUBLIC_KEY = "public_key.txt"
RECORD_SCHEMA = "record-schema.json"
PROBLEMS = "problems.json"
PROGRESS_EVERY = 5_000

FILE_DESCRIPTIONS = {
    ENTRIES: "line i (from 0) = the exact bytes of entry i (RFC 8785 canonical JSON of a "
    "record), then a newline that is not part of the entry",
    HASHES: 'line i = {"index": i, "leaf_hash": hex, "tree_root": hex}: entry i\'s leaf hash '
    "and the root after it, as stored (unsigned; used to name the first changed entry)",
    CHECKPOINTS: 'one line per checkpoint, oldest first: {"size": n, "root": base64, '
    '"note": C2SP signed note}; only the notes\' signatures count',
    PUBLIC_KEY: "the operator's Ed25519 public key, base64 of the raw 32 bytes",
    RECORD_SCHEMA: f"JSON schema of the records (schema version {SCHEMA_VERSION})",
    PROBLEMS: "what the ledger's verification found at export (index, kind, message); the "
    "entries and checkpoints are as stored and no checkpoint was signed for this export",
}

HOW_TO_VERIFY = [
    "Obtain the operator's public key independently of this bundle.",
    "Verify each note in checkpoints.jsonl as a C2SP signed note: the key name is the origin, "
    "the key id is SHA-256(origin || 0x0A || 0x01 || public key)[:4], the signature is "
    "Ed25519 over the note text. The text is a C2SP tlog-checkpoint: origin, size, base64 root.",
    "Hash each line of entries.jsonl, without its newline, as a leaf: SHA-256(0x00 || entry).",
    "Build the RFC 6962 tree over the leaves in line order (node = SHA-256(0x01 || left || "
    "right), split at the largest power of two below n) and compare the root at each "
    "checkpoint's size with the signed root; the number of entries equals tree_size.",
    "Optionally compare with hashes.jsonl to find the first changed entry.",
]


class _HashingWriter:
    """A file written line by line while its SHA-256 and size are computed."""

    def __init__(self, path: Path) -> None:
        self.name = path.name
        self._file: BinaryIO = path.open("xb")
        self._hash = hashlib.sha256()
        self.size = 0
        self.lines = 0

    def line(self, data: bytes) -> None:
        data += b"\n"
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)
        self.lines += 1

    def close(self) -> dict[str, Any]:
        self._file.close()
        return {
            "sha256": self._hash.hexdigest(),
            "bytes": self.size,
            "lines": self.lines,
            "describes": FILE_DESCRIPTIONS[self.name],
        }


def _json_line(value: dict[str, Any]) -> bytes:
    return canonical_json(value)


def write_bundle(
    out_dir: Path,
    *,
    origin: str,
    public_key: Ed25519PublicKey,
    checkpoints: list[SignedCheckpoint],
    rows: Iterable[tuple[int, bytes, bytes, bytes]],
    progress: Progress | None = None,
    tree_size: int | None = None,
    problems: list[dict[str, Any]] | None = None,
) -> Path:
    """Write a bundle of ``rows`` (index, entry, leaf hash, root after) up to the last of
    ``checkpoints`` into the empty or new folder ``out_dir``; returns the manifest's path.
    With ``problems`` (a ledger that failed verification) the rows and checkpoints are
    whatever is stored, ``tree_size`` the size the log claims, and ``problems.json`` says
    what is wrong."""
    if not checkpoints and not problems:
        raise BundleError("a bundle needs at least one signed checkpoint")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise BundleError(f"{out_dir} is not empty; export into a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    latest = checkpoints[-1] if checkpoints else None
    size = tree_size if tree_size is not None else (latest.size if latest else 0)
    files: dict[str, dict[str, Any]] = {}
    if problems:
        problem_file = _HashingWriter(out_dir / PROBLEMS)
        problem_file.line(json.dumps(problems, indent=1).encode("utf-8"))
        files[PROBLEMS] = problem_file.close()

    entries, hashes = _HashingWriter(out_dir / ENTRIES), _HashingWriter(out_dir / HASHES)
    for index, entry, leaf, root in rows:
        entries.line(entry)
        hashes.line(_json_line({"index": index, "leaf_hash": leaf.hex(), "tree_root": root.hex()}))
        if progress is not None and (index + 1) % PROGRESS_EVERY == 0:
            progress(index + 1, size)
    files[ENTRIES], files[HASHES] = entries.close(), hashes.close()

    notes = _HashingWriter(out_dir / CHECKPOINTS)
    for checkpoint in checkpoints:
        root_b64 = base64.b64encode(checkpoint.root).decode("ascii")
        notes.line(_json_line({"size": checkpoint.size, "root": root_b64, "note": checkpoint.note}))
    files[CHECKPOINTS] = notes.close()

    key_file = _HashingWriter(out_dir / PUBLIC_KEY)
    key_file.line(public_b64(public_key).encode("ascii"))
    files[PUBLIC_KEY] = key_file.close()

    schema_file = _HashingWriter(out_dir / RECORD_SCHEMA)
    schema_file.line(json.dumps(LedgerRecord.model_json_schema(), indent=2).encode("utf-8"))
    files[RECORD_SCHEMA] = schema_file.close()

    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "created_at": utcnow().isoformat(),
        "origin": origin,
        "tree_size": size,
        "root_hex": latest.root.hex() if latest else None,
        "checkpoint": latest.note if latest else None,
        "verified_at_export": not problems,
        "public_key": {
            "algorithm": "Ed25519",
            "base64": public_b64(public_key),
            "note_key_name": origin,
            "note_key_id_hex": note_key_id(origin, public_bytes(public_key)).hex(),
            "verifier_key": verifier_key(origin, public_key),
        },
        "hashing": {
            "tree": "RFC 6962 section 2.1 / RFC 9162 section 2.1 Merkle tree, SHA-256",
            "leaf": "SHA-256(0x00 || entry bytes)",
            "node": "SHA-256(0x01 || left || right)",
            "checkpoint": "C2SP tlog-checkpoint in a C2SP signed note (Ed25519, type 0x01)",
            "record": f"RFC 8785 canonical JSON, record schema version {SCHEMA_VERSION}",
        },
        "files": files,
        "how_to_verify": HOW_TO_VERIFY,
        "note": "This manifest is not signed: the checkpoint notes are the evidence; the file "
        "hashes here only show whether a file changed after export.",
    }
    manifest_path = out_dir / MANIFEST
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest_path


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _lines(path: Path) -> Iterator[bytes]:
    if not path.exists():
        return
    with path.open("rb") as handle:
        yield from handle


def _read_manifest(bundle: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{bundle / MANIFEST} cannot be read: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{bundle} is not a {BUNDLE_FORMAT}")
    if manifest.get("format_version") != BUNDLE_VERSION:
        raise BundleError(f"unknown bundle format version {manifest.get('format_version')!r}")
    files, key = manifest.get("files"), manifest.get("public_key")
    well_formed = (
        isinstance(manifest.get("origin"), str)
        and isinstance(manifest.get("tree_size"), int)
        and isinstance(key, dict)
        and isinstance(files, dict)
        and all(isinstance(described, dict) for described in files.values())
    )
    if not well_formed:
        raise BundleError(f"{bundle / MANIFEST} lacks the origin, size, key or file list")
    return manifest


def _claimed_checkpoints(bundle: Path, findings: Findings) -> list[ClaimedCheckpoint]:
    claimed = []
    for number, line in enumerate(_lines(bundle / CHECKPOINTS), start=1):
        try:
            item = json.loads(line)
            if not isinstance(item["note"], str):
                raise TypeError("a note is text")
            claimed.append(
                ClaimedCheckpoint(
                    int(item["size"]), base64.b64decode(item["root"], validate=True), item["note"]
                )
            )
        except (ValueError, KeyError, TypeError, binascii.Error):
            findings.bad(None, f"{CHECKPOINTS} line {number} is not a checkpoint")
    return claimed


def _stored_hashes(line: bytes | None, index: int) -> tuple[bytes | None, bytes | None, str | None]:
    """The leaf hash and root stored for ``index``; a problem if the line is not for it."""
    if line is None:
        return None, None, None
    try:
        item = json.loads(line)
        stored_index = item["index"]
        leaf, root = bytes.fromhex(item["leaf_hash"]), bytes.fromhex(item["tree_root"])
    except (ValueError, KeyError, TypeError):
        return None, None, f"{HASHES} line {index + 1} is malformed"
    if stored_index != index:
        return None, None, f"{HASHES} line {index + 1} is for entry {stored_index} (reordered)"
    return leaf, root, None


def _notes(bundle: Path) -> list[str]:
    notes = []
    for line in _lines(bundle / CHECKPOINTS) if (bundle / CHECKPOINTS).exists() else ():
        try:
            notes.append(json.loads(line)["note"])
        except (ValueError, KeyError, TypeError):
            continue
    return notes


def verify_bundle(
    bundle: Path,
    public_key: Ed25519PublicKey | bytes | str,
    progress: Progress | None = None,
    pins: Sequence[tuple[str, str]] = (),
    witnesses: Sequence[WitnessKey] = (),
    quorum: int = 0,
) -> VerificationReport:
    """Verify an export bundle with nothing but its files and the operator's public key.

    ``pins`` (``(where, note)``) are checkpoints the verifier held before: the bundle's
    entries must produce each pinned root, so a bundle of a rolled-back or rewritten log
    fails against any earlier note."""
    bundle = Path(bundle)
    findings = Findings()
    try:
        manifest = _read_manifest(bundle)
        origin = check_origin(manifest["origin"])
        trusted, _ = load_public_key(public_key)
    except (BundleError, CheckpointError) as exc:
        findings.bad(None, str(exc))
        return findings.report(0, 0, 0)

    if manifest["public_key"].get("base64") != public_b64(trusted):
        findings.bad(None, "the bundle names another public key than the one given")
    for name, described in sorted(manifest["files"].items()):
        if name not in FILE_DESCRIPTIONS:  # never follow a name the format does not define
            findings.bad(None, f"the manifest lists an unknown file {name!r}")
            continue
        path = bundle / name
        if not path.is_file():
            findings.bad(None, f"{name} is missing")
        elif _sha256_file(path) != described.get("sha256"):
            findings.bad(None, f"{name} differs from the manifest: it changed after export")

    _exported_problems(bundle, manifest, findings)
    claimed = _claimed_checkpoints(bundle, findings)
    signed = verified_checkpoints(claimed, trusted, origin, findings)
    if not signed:
        key_id = note_key_id(origin, public_bytes(trusted)).hex()
        findings.bad(
            None,
            f"none of the bundle's {len(claimed)} checkpoints verifies with the given key "
            f"(key id {key_id}): the wrong key, or notes it did not sign",
        )
        return findings.report(manifest.get("tree_size") or 0, 0, 0)
    signed_size = max(signed, default=0)
    if manifest.get("tree_size") != signed_size:
        findings.bad(
            None,
            f"the manifest says {manifest.get('tree_size')} entries, the latest signed "
            f"checkpoint {signed_size}",
        )
    elif signed and manifest.get("root_hex") != signed[signed_size].hex():
        findings.bad(None, "the manifest's root differs from the latest signed checkpoint's")
    if signed and manifest.get("checkpoint") not in (None, *_notes(bundle)):
        findings.bad(None, "the manifest's checkpoint is not one of the bundle's signed notes")

    add_pins(signed, pins, trusted, origin, findings)
    if quorum:
        _check_quorum(bundle, signed_size, witnesses, quorum, findings)
    replay = Replay(signed, findings)
    entry_lines = _lines(bundle / ENTRIES)
    hash_lines = _lines(bundle / HASHES) if (bundle / HASHES).exists() else iter(())
    for index, (entry_line, hash_line) in enumerate(zip_longest(entry_lines, hash_lines)):
        if entry_line is None:
            break
        if index >= signed_size:
            replay.fail(signed_size, f"entry {index} lies beyond the signed size (inserted)")
            break
        if not entry_line.endswith(b"\n"):
            replay.fail(index, f"{ENTRIES} line {index + 1} does not end in a newline")
            break
        leaf, root, problem = _stored_hashes(hash_line, index)
        if problem is not None:
            replay.fail(index, problem)
            break
        if replay.add(entry_line[:-1], leaf, root) is None:
            break
        if progress is not None and (index + 1) % PROGRESS_EVERY == 0:
            progress(index + 1, signed_size)
    replay.finish(signed_size)
    return findings.report(signed_size, len(signed), replay.attested_size)


def _exported_problems(bundle: Path, manifest: dict[str, Any], findings: Findings) -> None:
    """A bundle exported from a ledger that failed verification fails too, with the
    problems found at export (the replay below finds its own)."""
    path = bundle / PROBLEMS
    if PROBLEMS not in manifest["files"] and not path.exists():
        return
    try:
        problems = json.loads(path.read_text(encoding="utf-8"))
        listed = [(p.get("index"), str(p["message"])) for p in problems]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        findings.bad(None, f"{PROBLEMS} is present but unreadable")
        return
    findings.bad(None, f"the ledger failed verification when it was exported ({len(listed)} "
                 f"problems in {PROBLEMS})")  # fmt: skip
    for index, message in listed:
        findings.bad(index if isinstance(index, int) else None, f"at export: {message}")


def _check_quorum(
    bundle: Path, size: int, witnesses: Sequence[WitnessKey], quorum: int, findings: Findings
) -> None:
    """Some checkpoint of the bundle carries cosignatures of at least ``quorum`` of the given
    witnesses (the entries up to it were seen by them as an extension of what they saw
    before; entries after it are vouched for by the operator's signature alone)."""
    best = max((len(witnessed_by(note, witnesses)) for note in _notes(bundle)), default=0)
    if best < quorum:
        findings.bad(
            None,
            f"no checkpoint up to size {size} carries cosignatures of {quorum} of the "
            f"{len(witnesses)} witness keys given (at most {best})",
        )
