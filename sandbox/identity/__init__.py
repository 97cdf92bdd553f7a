"""Keys and signatures: Ed25519 identities for companies and for the sandbox's own roles.

Private keys are PKCS#8 PEM files written with permissions 0600 and never logged. Public
keys travel as the raw 32 bytes, base64-encoded. A key id is the first 8 bytes of the
SHA-256 of the raw public key, hex-encoded.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sandbox.files import write_atomic

SANDBOX_ROLES = ("operator", "regulator")


class KeyFileError(ValueError):
    """A key file is missing, unreadable, of the wrong kind or too widely readable."""


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def write_secret_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only (any private key)."""
    write_atomic(path, data, 0o600)  # the temporary file is the owner's alone from the start


def check_owner_only(path: Path) -> None:
    """Refuse a private key file that others can read (as ssh does)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise KeyFileError(f"cannot read private key {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise KeyFileError(f"private key {path} is readable by others; chmod 600 it")


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write ``key`` to ``path`` atomically, readable by the owner only."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_secret_file(path, pem)


def read_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read private key {path}: {exc.strerror}") from exc
    check_owner_only(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError as exc:
        raise KeyFileError(f"{path} is not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a key that is not Ed25519")
    return key


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The key at ``path``; created (0600) on first use.

    Several processes may start at once (the API, the coordinator, a CLI); exactly one key
    must win. The new key is written in full to a private temporary file and then linked into
    place, which fails if the path exists: a process that loses the race uses the winner's key.
    """
    if path.exists():
        return read_private_key(path)
    key = generate_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    write_private_key(tmp, key)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return read_private_key(path)
    finally:
        tmp.unlink()
    return key


def sandbox_key(keys_dir: Path, role: str) -> Ed25519PrivateKey:
    """The sandbox's own key for ``role`` (operator or regulator), created on first use."""
    if role not in SANDBOX_ROLES:
        raise ValueError(f"unknown sandbox role {role!r}; expected one of {SANDBOX_ROLES}")
    return load_or_create_key(keys_dir / f"{role}.key")


def public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    return base64.b64encode(public_bytes(key)).decode("ascii")


def key_id(public_key_b64: str) -> str:
    return hashlib.sha256(decode_public_key_b64(public_key_b64)).hexdigest()[:16]


def decode_public_key_b64(value: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (ValueError, TypeError) as exc:
        raise ValueError("public key is not valid base64") from exc
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, not {len(raw)}")
    return raw


def load_public_key(value: str | bytes) -> Ed25519PublicKey:
    raw = decode_public_key_b64(value) if isinstance(value, str) else value
    return Ed25519PublicKey.from_public_bytes(raw)


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    """Sign ``message``; the signature is returned base64-encoded."""
    return base64.b64encode(key.sign(message)).decode("ascii")


def verify(public_key_b64: str, message: bytes, signature_b64: str) -> bool:
    """True when ``signature_b64`` is a valid signature of ``message``; never raises."""
    try:
        pub = load_public_key(public_key_b64)
        sig = base64.b64decode(signature_b64, validate=True)
        pub.verify(sig, message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
