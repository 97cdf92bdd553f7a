"""Signed policy sets: a set becomes active only with a valid regulator signature over its hash.

A policy set is the schema, the ``.cedar`` packs and ``tiers.toml`` (see
:mod:`policies.policyset`); its hash covers all of them. The regulator signs
``sandbox-policy-set-signature/v1`` + the hex hash with its Ed25519 key.

Every activation attempt is a decision (``activate_policy`` by the operator on the candidate
``PolicySet``) and is recorded through the decision point's recorder, whether it succeeds or
not. A missing or bad signature, or a set that does not parse or validate, keeps the old set.

Bootstrap. Regulator keys are made per installation on first use, so no signature can ship
with the repository. Instead, on an installation's first start (no active set stored yet), the
installation's own regulator key signs the shipped set; that first activation is recorded with
``bootstrap = true``. The signed set is copied into the installation's store, and from then on
the stored copy is what starts: each start re-verifies its signature. A shipped set that
differs from the stored one (an upgrade, or a tampered file) becomes active only if the
regulator has signed its hash (``sandbox policy sign``, which files the signature in the
store); otherwise the failed activation is recorded and the stored set stays active. Trust on
first use is the price of per-installation keys; the bootstrap record in the ledger makes it
visible to the regulator.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from policies.engine import Decision, PolicyDecisionPoint, Recorder
from policies.facts import OperatorFacts, PolicySetFacts, Principal
from policies.policyset import (
    DEFAULT_POLICY_DIR,
    LoadedPolicySet,
    PolicySetError,
    hash_files,
    policy_files,
)
from sandbox.identity import public_b64, sign, verify

SIGNATURE_DOMAIN = b"sandbox-policy-set-signature/v1\n"
DEFAULT_OPERATOR = OperatorFacts("operator")


def signing_message(policy_set_hash: str) -> bytes:
    """The bytes a regulator signs for a policy set."""
    return SIGNATURE_DOMAIN + policy_set_hash.encode("ascii")


def sign_hash(key: Ed25519PrivateKey, policy_set_hash: str) -> str:
    """A regulator's signature (base64) over a policy-set hash."""
    return sign(key, signing_message(policy_set_hash))


def sign_policy_set(key: Ed25519PrivateKey, policy_dir: Path = DEFAULT_POLICY_DIR) -> str:
    """A regulator's signature (base64) over the policy set in ``policy_dir``."""
    return sign_hash(key, hash_files(policy_files(policy_dir)))


def signature_valid(policy_set_hash: str, signature: str | None, regulator_public_key: str) -> bool:
    """True when ``signature`` is the regulator's over ``policy_set_hash``; never raises."""
    if not signature:
        return False
    return verify(regulator_public_key, signing_message(policy_set_hash), signature)


@dataclass(frozen=True)
class ActivationResult:
    """What an activation attempt did.

    ``policy_set_hash`` is the candidate's hash (``None`` when its files could not be read);
    ``active_hash`` the hash active after the attempt; ``problems`` what was wrong with the
    candidate, readable; ``decision`` the recorded ``activate_policy`` decision.
    """

    activated: bool
    policy_set_hash: str | None
    active_hash: str
    problems: tuple[str, ...]
    decision: Decision


def activate(
    pdp: PolicyDecisionPoint,
    candidate: Path | Mapping[str, bytes],
    signature: str | None,
    regulator_public_key: str,
    *,
    operator: Principal = DEFAULT_OPERATOR,
    bootstrap: bool = False,
) -> ActivationResult:
    """Try to make the policy set in ``candidate`` (a folder, or its files by name) active.
    ``operator`` is who asks; the policy decides whether that principal may.

    The attempt is decided by the active set's ``activate_policy`` rules (by the candidate's
    own rules when nothing is active yet, i.e. at bootstrap) and recorded. Only an allowed
    and recorded decision installs the candidate; anything else keeps the old set.
    """
    problems: list[str] = []
    loaded: LoadedPolicySet | None = None
    try:
        files = policy_files(candidate) if isinstance(candidate, Path) else dict(candidate)
    except (PolicySetError, OSError) as exc:
        files = None
        problems.append(f"the policy files cannot be read: {exc}")
    digest = hash_files(files) if files is not None else "unreadable"
    valid = files is not None and signature_valid(digest, signature, regulator_public_key)
    if files is not None and not valid:
        problems.append(
            "no signature was given" if not signature else "the signature does not verify"
        )
    if files is not None:
        try:
            loaded = LoadedPolicySet.from_files(files)
        except PolicySetError as exc:
            problems += exc.problems
    facts = PolicySetFacts(
        hash=digest, signature_valid=valid, validated=loaded is not None, bootstrap=bootstrap
    )
    judge = pdp.active if pdp.active is not None else loaded
    decision = pdp.decide(operator, "activate_policy", facts, policy_set=judge)
    if decision.allowed and loaded is not None:
        pdp.install(loaded)
    return ActivationResult(
        activated=decision.allowed and loaded is not None,
        policy_set_hash=None if files is None else digest,
        active_hash=pdp.active_hash,
        problems=tuple(problems),
        decision=decision,
    )


class PolicyStore:
    """An installation's own record of its policy sets, in one folder (``<home>/policy``):

    - ``active/``: a copy of the files of the active set, and ``active.json`` with its hash
      and the regulator's signature;
    - ``signatures/<hash>.sig``: regulator signatures filed for sets not yet active.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def active_dir(self) -> Path:
        return self.root / "active"

    def load_active(self) -> tuple[dict[str, bytes], str] | None:
        """The stored active set's files and signature, or ``None`` before bootstrap."""
        meta_path = self.root / "active.json"
        if not meta_path.exists():
            return None
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        files = {p.name: p.read_bytes() for p in sorted(self.active_dir.iterdir()) if p.is_file()}
        return files, str(meta.get("signature", ""))

    def save_active(self, files: Mapping[str, bytes], signature: str) -> None:
        """Replace the stored active set. The new copy is written beside the old one and
        swapped in, and ``active.json`` is replaced last, so a crash leaves the old set or the
        new one, never a mix that would fail its signature."""
        staging = self.root / "active.new"
        _clear(staging)
        staging.mkdir(parents=True)
        for name, data in files.items():
            (staging / name).write_bytes(data)
        old = self.root / "active.old"
        _clear(old)
        if self.active_dir.exists():
            self.active_dir.rename(old)
        staging.rename(self.active_dir)
        _clear(old)
        meta = {
            "hash": hash_files(files),
            "signature": signature,
            "saved_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        tmp = self.root / "active.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.root / "active.json")

    def file_signature(self, policy_set_hash: str, signature: str) -> Path:
        """File a regulator's signature for a set, to be used when that set is activated."""
        folder = self.root / "signatures"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{policy_set_hash}.sig"
        path.write_text(signature + "\n", encoding="ascii")
        return path

    def signature_for(self, policy_set_hash: str) -> str | None:
        path = self.root / "signatures" / f"{policy_set_hash}.sig"
        return path.read_text(encoding="ascii").strip() if path.exists() else None


def _clear(path: Path) -> None:
    if not path.exists():
        return
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def start(
    store: PolicyStore,
    recorder: Recorder,
    regulator_public_key: str,
    *,
    policy_dir: Path = DEFAULT_POLICY_DIR,
    regulator_key: Ed25519PrivateKey | None = None,
    operator: OperatorFacts = DEFAULT_OPERATOR,
) -> tuple[PolicyDecisionPoint, list[ActivationResult]]:
    """The decision point of an installation, with its active set, and what starting did.

    First start (nothing stored): ``regulator_key`` signs the shipped set in ``policy_dir``
    (bootstrap). Later starts: the stored set is re-verified and activated; then, if the
    shipped set differs from it, it is activated with the signature filed for its hash, if
    any. Every attempt is recorded. If nothing could be activated, the decision point denies
    everything.
    """
    pdp = PolicyDecisionPoint(None, recorder)
    results: list[ActivationResult] = []
    stored = store.load_active()
    if stored is None:
        if regulator_key is None:
            raise ValueError("first start: the regulator's key is needed to sign the shipped set")
        if public_b64(regulator_key) != regulator_public_key:
            raise ValueError("the regulator key does not match the regulator public key")
        files = policy_files(policy_dir)
        signature = sign_hash(regulator_key, hash_files(files))
        result = activate(
            pdp, files, signature, regulator_public_key, operator=operator, bootstrap=True
        )
        results.append(result)
        if result.activated:
            store.save_active(files, signature)
        return pdp, results

    files, signature = stored
    results.append(activate(pdp, files, signature, regulator_public_key, operator=operator))
    shipped = policy_files(policy_dir)
    shipped_hash = hash_files(shipped)
    if shipped_hash != pdp.active_hash:
        new_signature = store.signature_for(shipped_hash)
        result = activate(pdp, shipped, new_signature, regulator_public_key, operator=operator)
        results.append(result)
        if result.activated and new_signature is not None:
            store.save_active(shipped, new_signature)
    return pdp, results
