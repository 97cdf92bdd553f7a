"""Signed checkpoints: C2SP ``tlog-checkpoint`` tree heads in C2SP ``signed-note`` envelopes.

A checkpoint's note text is three lines, the origin (the log's name), the tree size in
decimal and the base64 root hash, each ending in a newline. It is signed with Ed25519 as a
signed note: a blank line, then ``— <key name> <base64(key id || signature)>``, where the key
name is the origin and the key id is the first four bytes of
``SHA-256(key name || 0x0A || 0x01 || 32-byte public key)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sandbox.identity import public_bytes
from sandbox.ledger.errors import CheckpointError
from sandbox.ledger.merkle import HASH_SIZE

ED25519_SIGNATURE_TYPE = b"\x01"
SIGNATURE_LINE_PREFIX = "\u2014 "  # em dash, space
MAX_NOTE_BYTES = 131_072
MAX_SIGNATURES = 1_024
"""The log's own signature and a cosignature of every company (up to 256 in a job) and
regulator that witnesses it, with room to spare; a note beyond either limit is refused."""

_SIZE_LINE = re.compile(r"^(0|[1-9][0-9]{0,19})$")
_KEY_NAME = re.compile(r"^[^\s+]+$")


def check_origin(origin: str) -> str:
    """An origin doubles as the note key name: non-empty, printable, no spaces, no ``+``."""
    if not isinstance(origin, str) or not _KEY_NAME.fullmatch(origin) or not origin.isprintable():
        raise CheckpointError(
            f"origin {origin!r} cannot name a log: it must be non-empty, printable, "
            "with no spaces and no '+'"
        )
    return origin


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log ``origin`` had ``size`` entries with Merkle root ``root``.

    ``extensions`` are the note's extension lines (C2SP tlog-checkpoint allows opaque,
    non-empty lines after the root); this log writes the time it signed and the checkpoint
    before it there (:mod:`sandbox.ledger.chain`)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        """The note text (C2SP tlog-checkpoint)."""
        head = f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode('ascii')}\n"
        return head + "".join(f"{line}\n" for line in self.extensions)


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint with its signed note, as the ledger stores and hands it out."""

    checkpoint: Checkpoint
    note: str
    signed_at: datetime | None = None

    @property
    def origin(self) -> str:
        return self.checkpoint.origin

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root


def note_key_id(name: str, public_key: bytes) -> bytes:
    """The signed-note key id of an Ed25519 key under ``name``."""
    return hashlib.sha256(
        name.encode("utf-8") + b"\n" + ED25519_SIGNATURE_TYPE + public_key
    ).digest()[:4]


def verifier_key(name: str, key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The key in the signed-note verifier-key text form ``name+keyid+base64(0x01||key)``."""
    raw = public_bytes(key)
    encoded = base64.b64encode(ED25519_SIGNATURE_TYPE + raw).decode("ascii")
    return f"{check_origin(name)}+{note_key_id(name, raw).hex()}+{encoded}"


def sign_checkpoint(checkpoint: Checkpoint, key: Ed25519PrivateKey) -> str:
    """The signed note of ``checkpoint``, signed by ``key`` under the checkpoint's origin."""
    name = check_origin(checkpoint.origin)
    if len(checkpoint.root) != HASH_SIZE or checkpoint.size < 0:
        raise CheckpointError("a checkpoint has a 32-byte root and a size of 0 or more")
    if any(not line or "\n" in line for line in checkpoint.extensions):
        raise CheckpointError("an extension line is one non-empty line")
    text = checkpoint.body()
    signature = key.sign(text.encode("utf-8"))
    blob = base64.b64encode(note_key_id(name, public_bytes(key)) + signature).decode("ascii")
    return f"{text}\n{SIGNATURE_LINE_PREFIX}{name} {blob}\n"


def load_public_key(value: Ed25519PublicKey | bytes | str) -> tuple[Ed25519PublicKey, str | None]:
    """An Ed25519 public key from any of the forms the sandbox hands out.

    Accepts a key object, the raw 32 bytes, base64 of the raw bytes, a PEM public key, or a
    signed-note verifier key ``name+keyid+base64(0x01||key)``. Returns the key and, for a
    verifier key, the name it is bound to.
    """
    if isinstance(value, Ed25519PublicKey):
        return value, None
    if isinstance(value, bytes):
        if len(value) != 32:
            raise CheckpointError(f"a raw Ed25519 public key has 32 bytes, not {len(value)}")
        return Ed25519PublicKey.from_public_bytes(value), None
    text = value.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise CheckpointError("not a PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise CheckpointError("the PEM public key is not an Ed25519 key")
        return key, None
    if len(text) != 44:  # base64 of 32 raw bytes is 44 characters; anything else is a vkey
        name, _, rest = text.partition("+")
        key_id_hex, _, encoded = rest.partition("+")
        raw = _b64decode(encoded, "verifier key")
        if not name or len(raw) != 33 or raw[:1] != ED25519_SIGNATURE_TYPE:
            raise CheckpointError("not an Ed25519 public key nor a signed-note verifier key")
        if note_key_id(name, raw[1:]).hex() != key_id_hex:
            raise CheckpointError("the verifier key's id does not match its name and key")
        return Ed25519PublicKey.from_public_bytes(raw[1:]), name
    raw = _b64decode(text, "public key")
    return load_public_key(raw)


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CheckpointError(f"{what} is not valid base64") from exc


def parse_checkpoint_body(text: str) -> Checkpoint:
    """The tree head in a note text. Only call this on text whose signature was verified."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise CheckpointError("a checkpoint has at least three lines, each ending in a newline")
    origin, size_line, root_line, *extensions = lines[:-1]
    if not origin:
        raise CheckpointError("the checkpoint's origin line is empty")
    if not _SIZE_LINE.fullmatch(size_line):
        raise CheckpointError(f"the checkpoint's size line {size_line!r} is not a decimal size")
    root = _b64decode(root_line, "the checkpoint's root")
    if len(root) != HASH_SIZE or base64.b64encode(root).decode("ascii") != root_line:
        raise CheckpointError("the checkpoint's root is not a base64 SHA-256 hash")
    if any(not line for line in extensions):
        raise CheckpointError("a checkpoint's extension lines must not be empty")
    return Checkpoint(origin=origin, size=int(size_line), root=root, extensions=tuple(extensions))


def verify_checkpoint(
    note: str | bytes,
    public_key: Ed25519PublicKey | bytes | str,
    *,
    origin: str | None = None,
) -> Checkpoint:
    """The tree head of a signed checkpoint ``note``, once its signature by ``public_key`` holds.

    The key is identified as the signed-note spec says, by name and key id; the name is
    ``origin`` when given, else the note's own origin line (a log signs under its origin).
    Signatures by other keys are ignored; a failing signature by this key, or none at all,
    raises :class:`CheckpointError`, as does a note for another origin.
    """
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CheckpointError("a signed note is UTF-8") from exc
    if len(note.encode("utf-8")) > MAX_NOTE_BYTES:
        raise CheckpointError("the note is too large")
    if any(ord(char) < 0x20 and char != "\n" for char in note):
        raise CheckpointError("a signed note has no control characters besides newline")
    key, bound_name = load_public_key(public_key)
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise CheckpointError("not a signed note: no blank line before signature lines")
    text, signature_block = note[: split + 1], note[split + 2 :]
    claimed_origin = text.split("\n", 1)[0]
    name = origin if origin is not None else (bound_name or claimed_origin)
    if bound_name is not None and bound_name != name:
        raise CheckpointError(f"the key is bound to {bound_name!r}, not to {name!r}")
    check_origin(name)
    expected_id = note_key_id(name, public_bytes(key))
    signature_lines = signature_block[:-1].split("\n")
    if len(signature_lines) > MAX_SIGNATURES:
        raise CheckpointError("the note has too many signatures")
    verified = False
    for line in signature_lines:
        if not line.startswith(SIGNATURE_LINE_PREFIX):
            raise CheckpointError("a signature line starts with an em dash and a space")
        fields = line[len(SIGNATURE_LINE_PREFIX) :].split(" ")
        if len(fields) != 2 or not fields[0]:
            raise CheckpointError("a signature line is '— <name> <base64 signature>'")
        signer, blob = fields[0], _b64decode(fields[1], "a signature")
        if base64.b64encode(blob).decode("ascii") != fields[1]:
            # Unused low bits set: the same signature spelt another way. One spelling only.
            raise CheckpointError("a signature is not in canonical base64")
        if len(blob) < 5:
            raise CheckpointError("a signature is a key id and at least one byte")
        if signer != name or blob[:4] != expected_id:
            continue  # another key's signature (a witness, a rotated key): not ours to judge
        try:
            key.verify(blob[4:], text.encode("utf-8"))
        except InvalidSignature as exc:
            raise CheckpointError(f"the signature by {name} does not verify") from exc
        verified = True
    if not verified:
        raise CheckpointError(f"the note carries no signature by the key of {name}")
    checkpoint = parse_checkpoint_body(text)
    if checkpoint.origin != name:
        raise CheckpointError(f"the checkpoint is for {checkpoint.origin!r}, not {name!r}")
    return checkpoint
