"""Policy sets: reading the active one, and activating one a regulator signed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from policies.activation import ActivationResult, activate
from policies.policyset import POLICY_SUFFIX, SCHEMA_FILE, LoadedPolicySet
from policies.tiers import TIERS_FILE
from sandbox.config import Settings
from sandbox.errors import Forbidden, Invalid
from sandbox.governance import Governance
from sandbox.identity.installation import installation_regulator_key
from sandbox.registry.policy_sets import PolicyStore, sign_hash
from sandbox.services.base import read_registry


def active_policy_set(gov: Governance, actor: Any) -> LoadedPolicySet | None:
    """The policy set in force (a read of the registry)."""
    read_registry(gov, actor, "policy_set")
    return gov.pdp.active


def activate_policy_set(
    gov: Governance, actor: Any, files: dict[str, bytes], signature: str
) -> ActivationResult:
    """Make a policy set active: decided by the active set's ``activate_policy`` rules (a
    valid regulator signature over the set's hash, files that validate), recorded either
    way. An activated set is filed in the installation's store, so it is what later starts
    load. Raises Forbidden, listing what was wrong, when the set was not activated."""
    required = {SCHEMA_FILE, TIERS_FILE}
    missing = sorted(required - set(files))
    strays = sorted(n for n in files if n not in required and not n.endswith(POLICY_SUFFIX))
    if missing or strays or not any(n.endswith(POLICY_SUFFIX) for n in files):
        raise Invalid(
            f"a policy set is {SCHEMA_FILE}, {TIERS_FILE} and one or more *{POLICY_SUFFIX} "
            f"files; missing: {', '.join(missing) or 'none'}; not part of a set: "
            f"{', '.join(strays) or 'none'}"
        )
    result = activate(gov.pdp, files, signature, gov.regulator_public_key, operator=actor)
    if not result.activated:
        reasons = list(result.decision.reasons) + list(result.problems)
        raise Forbidden(
            f"the policy set was not activated: {'; '.join(reasons)} "
            f"(decision {result.decision.decision_id})",
            decision_id=result.decision.decision_id,
            reasons=tuple(reasons),
        )
    gov.policy_store.save_active(files, signature)
    return result


def sign_and_file(settings: Settings, policy_set_hash: str) -> tuple[str, Path]:
    """The regulator of the installation signs a policy set's hash with the key this home
    keeps, and the signature is filed in the installation's store: the set becomes active at
    the next start, where its activation is decided and recorded. Returns the signature and
    where it was filed. (A regulator whose key is on their own machine signs there, with
    ``sandbox regulator init --policy-dir``.)"""
    key = installation_regulator_key(settings, "signing a policy set")
    signature = sign_hash(key, policy_set_hash)
    return signature, PolicyStore(settings.home / "policy").file_signature(
        policy_set_hash, signature
    )
