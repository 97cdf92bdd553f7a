"""The policy decision point: one call, :meth:`PolicyDecisionPoint.decide`, for every access.

Every decision (allow, deny, or a request that could not be evaluated) goes to the recorder
before it is returned; the recorder is the seam where the ledger plugs in. The decision point
fails closed: a missing policy set, facts that do not fit, any Cedar error, or a recorder that
raises all give a denial, never an exception to the caller.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import cedarpy

from policies.facts import (
    NAMESPACE,
    FactsError,
    Principal,
    Resource,
    build_entities,
    context_mapping,
    uid,
    uid_text,
)
from policies.policyset import LoadedPolicySet

log = logging.getLogger(__name__)

ACTIONS = (
    "join",
    "register_dataset",
    "grant_consent",
    "revoke_consent",
    "submit_job",
    "approve_job",
    "reject_job",
    "participate_in_round",
    "read_dataset",
    "release_model",
    "read_audit",
    "export_audit",
    "activate_policy",
    "read_registry",
    "read_company_data",
    "list_jobs",
    "read_job",
    "start_job",
    "register_principal",
    "manage_tokens",
)
NO_POLICY_SET = "(none)"


@dataclass(frozen=True, slots=True)
class Decision:
    """One policy verdict, as it is recorded.

    ``policies`` are the ``@id`` of the policies that decided: the permits that allowed, or
    the forbids that denied; empty when nothing permitted the request or it could not be
    evaluated. ``reasons`` say the same for a person. ``context_digest`` and ``facts_digest``
    are SHA-256 over the canonical JSON of the Cedar context and of the entities the decision
    was made on, so that a recorded decision can be tied to its inputs without storing them.
    """

    decision_id: str
    allowed: bool
    policies: tuple[str, ...]
    errors: tuple[str, ...]
    reasons: tuple[str, ...]
    policy_set_hash: str
    principal: str
    action: str
    resource: str
    context_digest: str
    facts_digest: str
    time: datetime

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict of the decision, for the ledger."""
        return {
            "kind": "decision",
            "decision_id": self.decision_id,
            "allowed": self.allowed,
            "policies": list(self.policies),
            "errors": list(self.errors),
            "reasons": list(self.reasons),
            "policy_set_hash": self.policy_set_hash,
            "principal": self.principal,
            "action": self.action,
            "resource": self.resource,
            "context_digest": self.context_digest,
            "facts_digest": self.facts_digest,
            "time": self.time.isoformat().replace("+00:00", "Z"),
        }


Recorder = Callable[[Decision], None]
"""Where decisions go: the ledger's append, in the product. Must raise if it could not
record; the decision point then denies."""


@dataclass
class MemoryRecorder:
    """Keeps decisions in a list (tests, benchmarks, ``sandbox policy explain``)."""

    decisions: list[Decision] = field(default_factory=list)

    def __call__(self, decision: Decision) -> None:
        self.decisions.append(decision)


def canonical_json(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces. The values here are Cedar JSON (strings,
    integers, booleans, lists and objects, decimals as strings), for which this is the
    RFC 8785 encoding."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_CACHED_TYPES = frozenset({f"{NAMESPACE}::Job", f"{NAMESPACE}::Tier"})


def _join_json_lists(first: str, second: str) -> str:
    """The canonical JSON of two lists joined, from the canonical JSON of each."""
    if first == "[]":
        return second
    if second == "[]":
        return first
    return f"{first[:-1]},{second[1:]}"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _utc_now() -> datetime:
    return datetime.now(UTC)


_POLICY_REF = re.compile(r"`(policy\d+)`")


class PolicyDecisionPoint:
    """Decides requests against the active policy set and records every decision.

    Holds one :class:`LoadedPolicySet` (parsed once); :meth:`install` swaps it atomically.
    Activating a new set is the job of :func:`policies.activation.activate`, which checks the
    regulator's signature and records the activation as a decision before calling
    :meth:`install`.
    """

    def __init__(
        self,
        policy_set: LoadedPolicySet | None,
        recorder: Recorder,
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._active = policy_set
        self._recorder = recorder
        self._clock = clock
        if policy_set is not None:
            self.install(policy_set)

    @property
    def active(self) -> LoadedPolicySet | None:
        return self._active

    @property
    def active_hash(self) -> str:
        return self._active.hash if self._active is not None else NO_POLICY_SET

    def install(self, policy_set: LoadedPolicySet) -> None:
        """Make ``policy_set`` the active set. No signature check here: callers go through
        :func:`policies.activation.activate`."""
        self._active = policy_set  # one reference assignment: atomic for concurrent readers

    def decide(
        self,
        principal: Principal,
        action: str,
        resource: Resource,
        context: Mapping[str, Any] | Any | None = None,
        entities: Iterable[Any] = (),
        *,
        policy_set: LoadedPolicySet | None = None,
    ) -> Decision:
        """Decide whether ``principal`` may do ``action`` on ``resource``, record it, return it.

        ``context`` is a mapping (values: bool, int, str, Decimal/float, datetime, facts,
        lists, mappings) or one of the context classes of :mod:`policies.facts`.
        ``entities`` are further facts the decision needs: the datasets and consents of a
        job, for instance. ``policy_set`` overrides the active set for this one decision;
        only activation uses it, to decide the very first activation with the candidate set.
        """
        ps = policy_set if policy_set is not None else self._active
        now = self._clock()
        try:
            decision = self._evaluate(ps, principal, action, resource, context, entities, now)
        except Exception as exc:  # whatever went wrong, the answer is a recorded denial
            log.exception("policy evaluation failed")
            head = {
                "principal": _describe(principal),
                "action": str(action),
                "resource": _describe(resource),
                "policy_set_hash": ps.hash if ps is not None else NO_POLICY_SET,
                "time": now,
            }
            decision = _deny(
                head, "", "", f"The request could not be evaluated ({type(exc).__name__}: {exc})."
            )
        try:
            self._recorder(decision)
        except Exception as exc:
            return self._record_failed(decision, exc)
        return decision

    def _evaluate(
        self,
        ps: LoadedPolicySet | None,
        principal: Any,
        action: str,
        resource: Any,
        context: Any,
        entities: Iterable[Any],
        now: datetime,
    ) -> Decision:
        head = {
            "principal": _describe(principal),
            "action": action,
            "resource": _describe(resource),
            "policy_set_hash": ps.hash if ps is not None else NO_POLICY_SET,
            "time": now,
        }
        if ps is None:
            return _deny(head, "", "", "No policy set is active, so every request is denied.")
        if action not in ACTIONS:
            return _deny(head, "", "", f"{action!r} is not an action of the sandbox.")
        try:
            context_json, entities_json = build_entities(
                principal,
                resource,
                context_mapping(context),
                entities,
                now=now,
                tiers=ps.tiers,
            )
        except (FactsError, ValueError, TypeError, AttributeError) as exc:
            return _deny(head, "", "", f"The facts of the request do not fit: {exc}.")
        # One canonical serialisation each, used both for the digests and by Cedar. Jobs and
        # their tiers go first and apart: their parsed form is cached (see parsed_entities).
        heavy = [e for e in entities_json if e["uid"]["type"] in _CACHED_TYPES]
        light = [e for e in entities_json if e["uid"]["type"] not in _CACHED_TYPES]
        heavy_text, light_text = canonical_json(heavy), canonical_json(light)
        context_text = canonical_json(context_json)
        context_digest = _sha256(context_text)
        facts_digest = _sha256(_join_json_lists(heavy_text, light_text))
        request = {
            "principal": uid(principal.KIND, principal.id),
            "action": {"type": f"{NAMESPACE}::Action", "id": action},
            "resource": uid(resource.KIND, resource.id),
            "context": context_text,
        }
        try:
            request_entities: cedarpy.Entities | str = light_text
            if heavy:
                request_entities = ps.parsed_entities(heavy_text).with_added_json_str(
                    light_text, ps.cedar_schema
                )
            result = cedarpy.is_authorized(
                request, ps.cedar_policies, request_entities, ps.cedar_schema
            )
        except (ValueError, TypeError) as exc:
            return _deny(
                head, context_digest, facts_digest, f"The facts do not fit the schema: {exc}."
            )

        diagnostics = result.diagnostics
        ids = diagnostics.id_annotations_by_reason
        deciding = tuple(sorted(ids.get(p, p) for p in diagnostics.reasons))
        errors = tuple(
            _POLICY_REF.sub(lambda m: f"`{_id_of(ids, ps, m[1])}`", e) for e in diagnostics.errors
        )
        if errors:
            return Decision(
                decision_id=str(uuid.uuid4()),
                allowed=False,
                policies=(),
                errors=errors,
                reasons=(
                    "The request could not be evaluated without errors, so it is denied: "
                    + "; ".join(errors),
                ),
                context_digest=context_digest,
                facts_digest=facts_digest,
                **head,
            )
        allowed = result.allowed
        if deciding:
            fill = _Filler(ps, principal, action, resource, context_json, entities_json)
            reasons = tuple(fill(ps.reasons.get(p, p)) for p in deciding)
        else:
            reasons = (
                f"No policy permits {principal.KIND} {principal.id!r} to {action} "
                f"{resource.KIND} {resource.id!r}.",
            )
        return Decision(
            decision_id=str(uuid.uuid4()),
            allowed=allowed,
            policies=deciding,
            errors=(),
            reasons=reasons,
            context_digest=context_digest,
            facts_digest=facts_digest,
            **head,
        )

    def _record_failed(self, decision: Decision, exc: Exception) -> Decision:
        """The recorder could not take ``decision``: answer with a denial, and try once to
        record that denial (the ledger may have come back); never raise."""
        problem = f"the decision could not be recorded ({type(exc).__name__}: {exc})"
        denial = Decision(
            decision_id=str(uuid.uuid4()),
            allowed=False,
            policies=(),
            errors=(f"decision {decision.decision_id}: {problem}",),
            reasons=(
                "The decision could not be written to the audit ledger, so the request is denied.",
            ),
            policy_set_hash=decision.policy_set_hash,
            principal=decision.principal,
            action=decision.action,
            resource=decision.resource,
            context_digest=decision.context_digest,
            facts_digest=decision.facts_digest,
            time=decision.time,
        )
        log.error("policy decision %s not recorded: %s", decision.decision_id, exc)
        try:
            self._recorder(denial)
        except Exception as again:
            log.error("fail-closed denial %s not recorded either: %s", denial.decision_id, again)
        return denial


def _describe(facts: Any) -> str:
    """The entity uid of a fact, or (for something that is no fact) its repr."""
    try:
        return uid_text(facts)
    except AttributeError:
        return repr(facts)


def _id_of(ids: Mapping[str, str], ps: LoadedPolicySet, cedar_id: str) -> str:
    """The @id of Cedar's positional policy id (``policy3``)."""
    if cedar_id in ids:
        return ids[cedar_id]
    index = int(cedar_id.removeprefix("policy"))
    return ps.policies[index].id if index < len(ps.policies) else cedar_id


_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


class _Filler:
    """Fills the placeholders of a policy's @reason from the request: ``{principal}``,
    ``{action}``, ``{resource}``, and, about the job of the request (the resource, or the
    context's job), ``{tier}``, ``{participant_count}``, ``{without_consent}``,
    ``{dp_epsilon}``, the tier's numbers (``{min_participants}``, ``{dp_epsilon_cap}``, ...)
    and the context's values (``{epsilon_after}``, ``{worst_company_gap}``, ...). The details
    are worked out only when a reason asks for one."""

    def __init__(
        self,
        ps: LoadedPolicySet,
        principal: Any,
        action: str,
        resource: Any,
        context_json: Mapping[str, Any],
        entities_json: list[dict[str, Any]],
    ) -> None:
        self._basic = {
            "principal": repr(principal.id),
            "action": action,
            "resource": repr(resource.id),
        }
        self._ps = ps
        self._resource = resource
        self._context = context_json
        self._entities = entities_json
        self._details: dict[str, str] | None = None

    def __call__(self, reason: str) -> str:
        return _PLACEHOLDER.sub(lambda m: self._value(m[1], m[0]), reason)

    def _value(self, name: str, placeholder: str) -> str:
        if name in self._basic:
            return self._basic[name]
        if self._details is None:
            self._details = self._work_out()
        return self._details.get(name, placeholder)

    def _work_out(self) -> dict[str, str]:
        details = {k: _plain(v) for k, v in self._context.items() if not isinstance(v, dict)}
        details.update(
            {k: _plain(v) for k, v in self._context.items() if isinstance(v, dict) and _is_num(v)}
        )
        job_uid = uid(self._resource.KIND, self._resource.id)
        if job_uid["type"] != f"{NAMESPACE}::Job":
            ref = self._context.get("job")
            job_uid = ref.get("__entity") if isinstance(ref, dict) else None
        job = next((e for e in self._entities if e["uid"] == job_uid), None)
        if job is None:
            return details
        attrs = job["attrs"]
        tier = attrs["tier"]["__entity"]["id"]
        params = self._ps.tiers.tiers[tier]
        consenting = {c["__entity"]["id"] for c in attrs["consenting_companies"]}
        without = sorted({c["__entity"]["id"] for c in attrs["participants"]} - consenting)
        details.update(
            {
                "tier": tier,
                "participant_count": str(attrs["participant_count"]),
                "without_consent": ", ".join(without) or "none",
                "dp_epsilon": _plain(attrs["dp_epsilon"]) if attrs["dp_enabled"] else "none",
                "min_participants": str(params.min_participants),
                "dp_epsilon_cap": str(params.dp_epsilon_cap),
                "release_max_worst_company_gap": str(params.release_max_worst_company_gap),
                "release_max_calibration_error": str(params.release_max_calibration_error),
                "release_max_robustness_drop": str(params.release_max_robustness_drop),
            }
        )
        return details


def _is_num(value: Mapping[str, Any]) -> bool:
    return value.get("__extn", {}).get("fn") == "decimal"


def _plain(value: Any) -> str:
    """A Cedar JSON value as a person reads it (decimals without trailing zeros)."""
    if isinstance(value, dict) and _is_num(value):
        whole, _, fraction = value["__extn"]["arg"].partition(".")
        return f"{whole}.{fraction.rstrip('0') or '0'}"
    return str(value)


def _deny(head: dict[str, Any], context_digest: str, facts_digest: str, error: str) -> Decision:
    return Decision(
        decision_id=str(uuid.uuid4()),
        allowed=False,
        policies=(),
        errors=(error,),
        reasons=(error,),
        context_digest=context_digest,
        facts_digest=facts_digest,
        **head,
    )
