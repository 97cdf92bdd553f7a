"""Where the installation regulator's key lives.

Embedded default (one machine, the demo): the key is made on first use and kept in the
sandbox's home, beside the operator's. A deployment where the regulator is not the operator
keeps the private key on the regulator's own machine: ``sandbox regulator init`` makes it
there and writes a *public folder* — the public key (``regulator.pub``) and the regulator's
signatures over policy sets (``signatures/<hash>.sig``) — that the operator's servers read
(``SANDBOX_REGULATOR_PUBLIC_KEY_FILE`` names ``regulator.pub``). Such a server never holds
the private key: anything that would need it (approving a job, endorsing a regulator,
signing a policy set) is refused with the command the regulator runs instead, and a private
key found in the server's home is refused at start (fail closed: it has no place there).
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandbox.config import Settings
from sandbox.errors import Conflict
from sandbox.identity import decode_public_key_b64, public_b64, sandbox_key
from sandbox.vocabulary import is_sha256

PUBLIC_KEY_FILE = "regulator.pub"
SIGNATURES_DIR = "signatures"


class RegulatorKeyElsewhere(Conflict):
    """The installation regulator's private key is on the regulator's machine, not here."""


def key_is_elsewhere(settings: Settings) -> bool:
    return settings.regulator_public_key_file is not None


def installation_regulator_key(settings: Settings, needed_for: str) -> Ed25519PrivateKey:
    """The installation regulator's private key, when this home keeps it; otherwise
    :class:`RegulatorKeyElsewhere`, saying what the regulator does instead."""
    if key_is_elsewhere(settings):
        raise RegulatorKeyElsewhere(
            f"{needed_for} needs the installation regulator's private key, which is on the "
            "regulator's own machine (this server holds only its public key): the regulator "
            "does it there, with `sandbox regulator` and their key file"
        )
    return sandbox_key(settings.keys_dir, "regulator")


def installation_regulator_public_key(settings: Settings) -> str:
    """The installation regulator's public key (base64): read from the public folder, or
    from the key kept in this home (made on first use)."""
    file = settings.regulator_public_key_file
    if file is None:
        return public_b64(sandbox_key(settings.keys_dir, "regulator"))
    kept = settings.keys_dir / "regulator.key"
    if kept.exists():
        raise ValueError(
            f"{kept} is a regulator's private key on a server that reads the regulator's "
            f"public key from {file}: the private key belongs on the regulator's machine; "
            "remove it from this home"
        )
    try:
        value = file.read_text(encoding="ascii").strip()
        decode_public_key_b64(value)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"the regulator's public key file {file}: {exc}") from None
    return value


def filed_policy_signatures(settings: Settings) -> dict[str, str]:
    """The regulator's signatures over policy sets in the public folder, by set hash."""
    file = settings.regulator_public_key_file
    folder = None if file is None else file.parent / SIGNATURES_DIR
    if folder is None or not folder.is_dir():
        return {}
    found: dict[str, str] = {}
    for path in sorted(folder.glob("*.sig")):
        if is_sha256(path.stem):
            found[path.stem] = path.read_text(encoding="ascii").strip()
    return found


def write_public_folder(
    key: Ed25519PrivateKey, folder: Path, policy_set_hash: str, signature: str
) -> Path:
    """Write the regulator's public folder: the public key and a policy-set signature.
    Returns the public key's file (what ``SANDBOX_REGULATOR_PUBLIC_KEY_FILE`` names)."""
    if not is_sha256(policy_set_hash):
        raise ValueError(f"not a policy-set hash: {policy_set_hash!r}")
    (folder / SIGNATURES_DIR).mkdir(parents=True, exist_ok=True)
    public = folder / PUBLIC_KEY_FILE
    public.write_text(public_b64(key) + "\n", encoding="ascii")
    (folder / SIGNATURES_DIR / f"{policy_set_hash}.sig").write_text(signature + "\n", "ascii")
    return public
