"""The policy decision point of the sandbox, on Cedar.

Takes facts, returns decisions: nothing here knows of Flower, FastAPI or the database. The
policy set (``schema.cedarschema``, the ``.cedar`` packs, ``tiers.toml``) lives beside this
file; the policy test cases in ``tests/``.
"""

from policies.engine import Decision, MemoryRecorder, PolicyDecisionPoint, Recorder
from policies.policyset import LoadedPolicySet, PolicySetError, policy_set_hash
from policies.tiers import risk_tier

__all__ = [
    "Decision",
    "LoadedPolicySet",
    "MemoryRecorder",
    "PolicyDecisionPoint",
    "PolicySetError",
    "Recorder",
    "policy_set_hash",
    "risk_tier",
]
