"""Signed policy sets: a set becomes active only with a valid regulator signature over its hash.

A policy set is the schema, the ``.cedar`` packs and ``tiers.toml`` (see
:mod:`policies.policyset`); its hash covers all of them. The regulator signs
``sandbox-policy-set-signature/v1`` + the hex hash with its Ed25519 key.

Every activation attempt is a decision (``activate_policy`` by the operator on the candidate
``PolicySet``) and is recorded through the decision point's recorder, whether it succeeds or
not. A missing or bad signature, or a set that does not parse or validate, keeps the old set.

Signing and the installation's store of signed sets live in the sandbox
(:mod:`sandbox.registry.policy_sets`, :func:`sandbox.governance.start_policy_point`); this
module only verifies and decides.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from policies.engine import Decision, PolicyDecisionPoint
from policies.facts import OperatorFacts, PolicySetFacts, Principal
from policies.policyset import (
    LoadedPolicySet,
    PolicySetError,
    hash_files,
    policy_files,
)

SIGNATURE_DOMAIN = b"sandbox-policy-set-signature/v1\n"
DEFAULT_OPERATOR = OperatorFacts("operator")


def signing_message(policy_set_hash: str) -> bytes:
    """The bytes a regulator signs for a policy set."""
    return SIGNATURE_DOMAIN + policy_set_hash.encode("ascii")


def signature_valid(policy_set_hash: str, signature: str | None, regulator_public_key: str) -> bool:
    """True when ``signature`` is the regulator's over ``policy_set_hash``; never raises."""
    if not signature:
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(
            base64.b64decode(regulator_public_key, validate=True)
        )
        key.verify(base64.b64decode(signature, validate=True), signing_message(policy_set_hash))
    except (InvalidSignature, ValueError, TypeError, binascii.Error):
        return False
    return True


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
