"""Signed checkpoints: the C2SP tlog-checkpoint body in a C2SP signed note."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandbox.identity import public_b64, public_bytes
from sandbox.ledger import Checkpoint, CheckpointError, load_public_key, verify_checkpoint
from sandbox.ledger.checkpoint import note_key_id, sign_checkpoint, verifier_key

ORIGIN = "sandbox.example/ledger"
ROOT = hashlib.sha256(b"some root").digest()


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def note(key: Ed25519PrivateKey) -> str:
    return sign_checkpoint(Checkpoint(ORIGIN, 20852163, ROOT), key)


def test_note_has_the_c2sp_layout(key: Ed25519PrivateKey, note: str) -> None:
    text, signatures = note.split("\n\n")
    assert text == f"{ORIGIN}\n20852163\n{base64.b64encode(ROOT).decode()}"
    assert signatures.startswith(f"\u2014 {ORIGIN} ") and signatures.endswith("\n")
    blob = base64.b64decode(signatures.split(" ")[2])
    assert len(blob) == 4 + 64
    expected_id = hashlib.sha256(ORIGIN.encode() + b"\n\x01" + public_bytes(key)).digest()[:4]
    assert blob[:4] == expected_id == note_key_id(ORIGIN, public_bytes(key))
    key.public_key().verify(blob[4:], (text + "\n").encode())


def test_verify_returns_the_tree_head(key: Ed25519PrivateKey, note: str) -> None:
    checkpoint = verify_checkpoint(note, public_b64(key))
    assert checkpoint == Checkpoint(ORIGIN, 20852163, ROOT)
    assert verify_checkpoint(note.encode(), key.public_key(), origin=ORIGIN) == checkpoint


@pytest.mark.parametrize(
    "form",
    ["object", "raw", "base64", "pem", "vkey"],
)
def test_every_public_key_form_verifies(key: Ed25519PrivateKey, note: str, form: str) -> None:
    public = key.public_key()
    value = {
        "object": public,
        "raw": public_bytes(public),
        "base64": public_b64(public),
        "pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode(),
        "vkey": verifier_key(ORIGIN, public),
    }[form]
    assert verify_checkpoint(note, value).size == 20852163


def test_a_verifier_key_is_bound_to_its_name(key: Ed25519PrivateKey, note: str) -> None:
    with pytest.raises(CheckpointError):
        verify_checkpoint(note, verifier_key("other.example/log", key.public_key()))
    tampered = verifier_key(ORIGIN, key.public_key()).replace("+", "+0", 1)
    with pytest.raises(CheckpointError):
        load_public_key(tampered)


def test_another_key_is_refused(note: str) -> None:
    with pytest.raises(CheckpointError, match="no signature"):
        verify_checkpoint(note, Ed25519PrivateKey.generate().public_key())


def test_another_origin_is_refused(key: Ed25519PrivateKey, note: str) -> None:
    with pytest.raises(CheckpointError):
        verify_checkpoint(note, key.public_key(), origin="other.example/log")


def _flip(note: str, position: int) -> str:
    data = bytearray(note.encode())
    data[position] ^= 0x01
    return data.decode("utf-8", errors="replace")


def test_any_changed_byte_is_refused(key: Ed25519PrivateKey, note: str) -> None:
    for position in range(len(note.encode())):
        tampered = _flip(note, position)
        if tampered == note:
            continue
        with pytest.raises(CheckpointError):
            verify_checkpoint(tampered, key.public_key(), origin=ORIGIN)


def test_unknown_signatures_are_ignored_but_a_bad_one_of_ours_is_not(
    key: Ed25519PrivateKey, note: str
) -> None:
    witness = Ed25519PrivateKey.generate()
    text = note.split("\n\n")[0] + "\n"
    blob = note_key_id("witness.example", public_bytes(witness)) + witness.sign(text.encode())
    cosigned = note + f"\u2014 witness.example {base64.b64encode(blob).decode()}\n"
    assert verify_checkpoint(cosigned, key.public_key()).size == 20852163

    ours = note.split("\n\n")[1]
    forged_blob = note_key_id(ORIGIN, public_bytes(key)) + bytes(64)
    forged = f"{text}\n\u2014 {ORIGIN} {base64.b64encode(forged_blob).decode()}\n{ours}"
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_checkpoint(forged, key.public_key())


@pytest.mark.parametrize(
    "body",
    [
        f"{ORIGIN}\n007\n{base64.b64encode(ROOT).decode()}\n",  # leading zeros
        f"{ORIGIN}\n-1\n{base64.b64encode(ROOT).decode()}\n",
        f"{ORIGIN}\n7\n{base64.b64encode(ROOT[:31]).decode()}\n",  # short root
        f"{ORIGIN}\n7\n",  # no root line
        f"{ORIGIN}\n7\n{base64.b64encode(ROOT).decode()}\n\n",  # empty extension line
    ],
)
def test_malformed_bodies_are_refused_even_when_signed(key: Ed25519PrivateKey, body: str) -> None:
    blob = note_key_id(ORIGIN, public_bytes(key)) + key.sign(body.encode())
    note = f"{body}\n\u2014 {ORIGIN} {base64.b64encode(blob).decode()}\n"
    with pytest.raises(CheckpointError):
        verify_checkpoint(note, key.public_key(), origin=ORIGIN)


@pytest.mark.parametrize("origin", ["", "has space", "a+b", "line\nbreak"])
def test_origins_that_cannot_name_a_key_are_refused(key: Ed25519PrivateKey, origin: str) -> None:
    with pytest.raises(CheckpointError):
        sign_checkpoint(Checkpoint(origin, 1, ROOT), key)


def test_control_characters_are_refused(key: Ed25519PrivateKey, note: str) -> None:
    with pytest.raises(CheckpointError):
        verify_checkpoint(note.replace("\n", "\r\n", 1), key.public_key())


def test_a_signature_spelt_in_non_canonical_base64_is_refused(
    key: Ed25519PrivateKey, note: str
) -> None:
    signature_line = note.split("\n\n")[1]
    encoded = signature_line.split(" ")[2].strip()
    assert encoded.endswith("=") and not encoded.endswith("==")  # 68 bytes: 2 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(encoded[-2])
    respelt = encoded[:-2] + alphabet[last | 1 if not last & 1 else last & ~1] + "="
    assert base64.b64decode(respelt) == base64.b64decode(encoded)
    with pytest.raises(CheckpointError, match="canonical"):
        verify_checkpoint(note.replace(encoded, respelt), key.public_key())
