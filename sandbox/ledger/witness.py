"""Witnesses: C2SP ``tlog-witness`` (add-checkpoint) and ``tlog-cosignature`` (cosignature/v1,
Ed25519, timestamped).

A witness keeps the latest checkpoint it cosigned for the log and cosigns a new one only when
a consistency proof from that one verifies: a log that shows it a rolled-back, rewritten or
forked history gets no cosignature, and the witness keeps both signed notes as evidence and
raises an alarm. A checkpoint carrying cosignatures from a quorum of independent witnesses
(the companies' nodes, a regulator) is one that many parties saw as an extension of what
they saw before; a split view must fool all of them.

The request is the add-checkpoint body: ``old <size>``, the consistency proof lines (base64),
an empty line, then the signed checkpoint note. The answer is an HTTP-like status and body,
so that the same code serves a node answering a task and an HTTP endpoint.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sandbox.files import exclusive_lock, write_atomic
from sandbox.identity import public_bytes
from sandbox.ledger.checkpoint import (
    SIGNATURE_LINE_PREFIX,
    Checkpoint,
    check_origin,
    load_public_key,
    verify_checkpoint,
)
from sandbox.ledger.errors import CheckpointError
from sandbox.ledger.merkle import EMPTY_ROOT, verify_consistency
from sandbox.utc import utcnow

COSIGNATURE_TYPE = b"\x04"
COSIGNATURE_HEADER = "cosignature/v1"
MAX_PROOF_LINES = 63
MAX_REQUEST_BYTES = 70_000


# ------------------------------------------------------------------ cosignature/v1
def cosigner_key_id(name: str, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || 0x04 || 32-byte key)[:4]."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + COSIGNATURE_TYPE + public_key).digest()[:4]


def _message(body: str, timestamp: int) -> bytes:
    return f"{COSIGNATURE_HEADER}\ntime {timestamp}\n{body}".encode()


def cosign(body: str, key: Ed25519PrivateKey, name: str, timestamp: int) -> str:
    """The cosignature line (with its newline) of ``key`` under ``name`` over the checkpoint
    note text ``body`` at POSIX time ``timestamp``."""
    check_origin(name)
    if not 0 < timestamp < 2**63:
        raise CheckpointError("a cosignature's timestamp is a positive POSIX time")
    signature = key.sign(_message(body, timestamp))
    blob = cosigner_key_id(name, public_bytes(key)) + struct.pack(">Q", timestamp) + signature
    return f"{SIGNATURE_LINE_PREFIX}{name} {base64.b64encode(blob).decode('ascii')}\n"


def cosignature_time(note: str, name: str, public_key: Ed25519PublicKey | bytes | str) -> int:
    """The timestamp of the cosignature by ``public_key`` under ``name`` on ``note``; raises
    :class:`CheckpointError` when there is none or it does not verify."""
    key, _ = load_public_key(public_key)
    split = note.rfind("\n\n")
    if split < 0:
        raise CheckpointError("not a signed note")
    body, lines = note[: split + 1], note[split + 2 :].splitlines()
    wanted = cosigner_key_id(name, public_bytes(key))
    for line in lines:
        if not line.startswith(f"{SIGNATURE_LINE_PREFIX}{name} "):
            continue
        try:
            blob = base64.b64decode(line.split(" ")[-1], validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(blob) != 4 + 8 + 64 or blob[:4] != wanted:
            continue
        (timestamp,) = struct.unpack(">Q", blob[4:12])
        try:
            key.verify(blob[12:], _message(body, timestamp))
        except InvalidSignature as exc:
            raise CheckpointError(f"the cosignature by {name} does not verify") from exc
        return int(timestamp)
    raise CheckpointError(f"the note carries no cosignature by {name}")


def with_cosignatures(note: str, lines: Sequence[str]) -> str:
    """``note`` with the signature ``lines`` added (each once)."""
    present = set(note.splitlines())
    extra = "".join(line if line.endswith("\n") else line + "\n" for line in lines
                    if line.rstrip("\n") not in present)  # fmt: skip
    return note + extra


@dataclass(frozen=True)
class WitnessKey:
    """A witness a verifier trusts: its name and Ed25519 public key (base64)."""

    name: str
    public_key: str

    @classmethod
    def parse(cls, text: str) -> WitnessKey:
        """``NAME=BASE64KEY``."""
        name, _, key = text.partition("=")
        if not name or not key:
            raise ValueError(f"a witness key is NAME=BASE64 (got {text!r})")
        load_public_key(key)
        return cls(check_origin(name), key)


def witnessed_by(note: str, witnesses: Sequence[WitnessKey]) -> list[str]:
    """The names of ``witnesses`` whose cosignature on ``note`` verifies."""
    found = []
    for witness in witnesses:
        try:
            cosignature_time(note, witness.name, witness.public_key)
        except CheckpointError:
            continue
        found.append(witness.name)
    return found


# ------------------------------------------------------------------ add-checkpoint
def add_checkpoint_request(old_size: int, proof: Sequence[bytes], note: str) -> str:
    lines = [f"old {old_size}"] + [base64.b64encode(h).decode("ascii") for h in proof]
    return "\n".join(lines) + "\n\n" + note


def parse_add_checkpoint(body: str) -> tuple[int, list[bytes], str]:
    if len(body.encode("utf-8")) > MAX_REQUEST_BYTES:
        raise ValueError("the request is too large")
    head, sep, note = body.partition("\n\n")
    if not sep:
        raise ValueError("no empty line before the checkpoint")
    lines = head.split("\n")
    if not lines[0].startswith("old ") or not lines[0][4:].isdigit():
        raise ValueError("the first line is 'old <size>'")
    if len(lines[0][4:]) > 1 and lines[0][4] == "0":
        raise ValueError("the old size has a leading zero")
    proof_lines = lines[1:]
    if len(proof_lines) > MAX_PROOF_LINES:
        raise ValueError("more than 63 consistency proof lines")
    try:
        proof = [base64.b64decode(p, validate=True) for p in proof_lines]
    except (binascii.Error, ValueError):
        raise ValueError("a consistency proof line is not base64") from None
    if any(len(h) != 32 for h in proof):
        raise ValueError("a consistency proof line is not a SHA-256 hash")
    return int(lines[0][4:]), proof, note


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    alarm: str | None = None


class Witness:
    """One witness of one log: its key and name, the log's origin and key, and its state
    folder (the latest cosigned checkpoint, and the evidence of any misbehaviour)."""

    def __init__(self, folder: Path, name: str, key: Ed25519PrivateKey, origin: str | None,
                 log_key: str) -> None:  # fmt: skip
        """``origin`` None: the log the witness first cosigns for, and only that one, after."""
        self.folder = folder
        self.name = check_origin(name)
        self.key = key
        self.log_key = log_key
        self.origin = origin or self._held_origin()

    def _held_origin(self) -> str | None:
        if not self.state_path.exists():
            return None
        note = json.loads(self.state_path.read_text(encoding="utf-8"))["note"]
        return str(note.split("\n", 1)[0])

    @property
    def state_path(self) -> Path:
        return self.folder / "latest.json"

    @property
    def alarms_dir(self) -> Path:
        return self.folder / "alarms"

    def latest(self) -> tuple[Checkpoint, str] | None:
        """The latest checkpoint cosigned and its note (None before the first)."""
        if not self.state_path.exists():
            return None
        note = json.loads(self.state_path.read_text(encoding="utf-8"))["note"]
        return verify_checkpoint(note, self.log_key, origin=self.origin or ""), note

    def alarms(self) -> list[dict[str, str]]:
        if not self.alarms_dir.exists():
            return []
        return [json.loads(p.read_text(encoding="utf-8"))
                for p in sorted(self.alarms_dir.glob("*.json"))]  # fmt: skip

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with exclusive_lock(self.folder / ".lock"):
            yield

    def add_checkpoint(self, body: str, now: int | None = None) -> Answer:
        """Answer an add-checkpoint request (C2SP tlog-witness), atomically."""
        try:
            old_size, proof, note = parse_add_checkpoint(body)
        except ValueError as exc:
            return Answer(400, f"{exc}\n")
        origin = self.origin or note.split("\n", 1)[0]
        if note.split("\n", 1)[0] != origin:
            return Answer(404, "unknown log origin\n")
        try:
            new = verify_checkpoint(note, self.log_key, origin=origin)
        except CheckpointError as exc:
            return Answer(403, f"{exc}\n")
        self.origin = origin
        if old_size > new.size:
            return Answer(400, "the old size is larger than the checkpoint's\n")
        if new.size == 0 and new.root != EMPTY_ROOT:
            return Answer(422, "an empty tree has the empty root\n")
        with self._locked():
            held = self.latest()
            held_size = 0 if held is None else held[0].size
            if old_size != held_size:
                return Answer(409, f"{held_size}\n")
            problem = self._inconsistency(held, new, proof)
            if problem is not None:
                alarm = self._raise_alarm(problem, held, note)
                return Answer(422, f"{problem}\n", alarm)
            text = new.body()
            line = cosign(text, self.key, self.name, now or int(utcnow().timestamp()))
            document = {"note": note, "cosignature": line}
            write_atomic(self.state_path, json.dumps(document).encode("utf-8"), mode=0o600)
            return Answer(200, line)

    def _inconsistency(self, held: tuple[Checkpoint, str] | None, new: Checkpoint,
                       proof: list[bytes]) -> str | None:  # fmt: skip
        if held is None:
            return "a consistency proof from size 0 is empty" if proof else None
        old = held[0]
        if old.size == new.size:
            return (
                None
                if old.root == new.root
                else (f"two different roots signed at size {new.size}: a split view")
            )
        if not verify_consistency(old.size, new.size, old.root, new.root, proof):
            return (
                f"size {new.size} is not consistent with size {old.size}, which this witness "
                "cosigned: the history was rewritten"
            )
        return None

    def served_smaller(self, note: str) -> str | None:
        """An alarm when ``note``, served as the log's *latest* checkpoint and signed with its
        key, is smaller than the checkpoint this witness cosigned: an honest log never
        serves a smaller tree after a larger one (a rollback). None when it is not smaller."""
        new = verify_checkpoint(note, self.log_key, origin=self.origin or note.split("\n", 1)[0])
        with self._locked():
            held = self.latest()
            if held is None or new.size >= held[0].size:
                return None
            problem = (
                f"the log serves size {new.size} as its latest, after this witness cosigned "
                f"size {held[0].size}: it was rolled back"
            )
            return self._raise_alarm(problem, held, note)

    def _raise_alarm(self, problem: str, held: tuple[Checkpoint, str] | None, note: str) -> str:
        self.alarms_dir.mkdir(parents=True, exist_ok=True)
        stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
        document = {"problem": problem, "cosigned": held[1] if held else "", "shown": note,
                    "time": stamp}  # fmt: skip
        path = self.alarms_dir / f"{stamp}.json"
        write_atomic(path, json.dumps(document, indent=1).encode("utf-8"), mode=0o600)
        return problem
