"""The policy decision point: one call, :meth:`PolicyDecisionPoint.decide`, for every access.

Every decision (allow, deny, or a request that could not be evaluated) goes to the recorder
before it is returned; the recorder is the seam where the ledger plugs in. The decision point
fails closed: a missing policy set, facts that do not fit, any Cedar error, or a recorder that
raises all give a denial, never an exception to the caller.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict

import cedarpy

from policies.entities import NAMESPACE, build_entities, context_mapping, uid, uid_text
from policies.facts import FactsError, Principal, Resource
from policies.policyset import OUTCOME_DENY, LoadedPolicySet
from policies.reasons import ReasonFiller
from sandbox.canonical import canonical_text

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
    "review_release",
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
    "register_node_key",
    "report_refusal",
    "witness_checkpoint",
    "read_job_figures",
    "review_application",
    "issue_voucher",
    "settle_job",
    "contest_settlement",
    "resolve_dispute",
)
NO_POLICY_SET = "(none)"
NOT_RECORDED = "The decision could not be written to the audit ledger, so the request is denied."
"""The reason of the denial given when the ledger could not record a decision."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict of one policy marked ``@check`` on a request, for a person: whether the
    request passed it, the figure it judged (``@check`` names the context value) against its
    limit (``@limit`` names the tier's number), and the policy's own words for the outcome
    (``@reason`` when it failed, ``@passed`` when it passed)."""

    policy: str
    passed: bool
    measure: str
    value: str | None
    limit: str | None
    text: str
    outcome: str = OUTCOME_DENY
    """What failing this check means: ``deny``, or ``insufficient_evidence`` (``@outcome``)."""


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
    checks: tuple[CheckResult, ...] = ()

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
            head = _head(ps, principal, str(action), resource, now)
            decision = _deny(
                head, "", "", f"The request could not be evaluated ({type(exc).__name__}: {exc})."
            )
        try:
            self._recorder(decision)
        except Exception as exc:
            return self._record_failed(decision, exc)
        return decision

    def consider(
        self,
        principal: Principal,
        action: str,
        resource: Resource,
        context: Mapping[str, Any] | Any | None = None,
        entities: Iterable[Any] = (),
    ) -> Decision:
        """What the active set *would* decide, not recorded: for the questions an act asks
        about itself (would this job need an approval to start?), whose answer the caller
        records with the act. Never grants anything; access is decided by :meth:`decide`.
        Fails closed like it: anything that goes wrong is a denial."""
        ps = self._active
        now = self._clock()
        try:
            return self._evaluate(ps, principal, action, resource, context, entities, now)
        except Exception as exc:
            log.exception("policy evaluation failed")
            head = _head(ps, principal, str(action), resource, now)
            return _deny(head, "", "", f"The request could not be evaluated ({exc}).")

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
        head = _head(ps, principal, action, resource, now)
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
        heavy_text, light_text = canonical_text(heavy), canonical_text(light)
        context_text = canonical_text(context_json)
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
        fill = ReasonFiller(ps, principal, action, resource, context_json, entities_json)
        if deciding:
            reasons = tuple(fill(ps.reasons.get(p, p)) for p in deciding)
        else:
            reasons = (
                f"No policy permits {principal.KIND} {principal.id!r} to {action} "
                f"{resource.KIND} {resource.id!r}.",
            )
        failed = set() if allowed else set(deciding)
        checks = tuple(
            CheckResult(
                policy=p.id,
                passed=p.id not in failed,
                measure=p.annotations["check"],
                value=fill.value_of(p.annotations["check"]),
                limit=fill.value_of(p.annotations.get("limit", "")),
                text=fill(p.reason if p.id in failed else p.annotations["passed"]),
                outcome=p.annotations.get("outcome", OUTCOME_DENY),
            )
            for p in ps.policies
            if "check" in p.annotations and p.about(action)
        )
        return Decision(
            decision_id=str(uuid.uuid4()),
            allowed=allowed,
            policies=deciding,
            errors=(),
            reasons=reasons,
            context_digest=context_digest,
            facts_digest=facts_digest,
            checks=checks,
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
            reasons=(NOT_RECORDED,),
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


class _Head(TypedDict):
    """What a decision says of its request, whatever the verdict."""

    principal: str
    action: str
    resource: str
    policy_set_hash: str
    time: datetime


def _head(
    ps: LoadedPolicySet | None, principal: Any, action: str, resource: Any, now: datetime
) -> _Head:
    return {
        "principal": _describe(principal),
        "action": action,
        "resource": _describe(resource),
        "policy_set_hash": ps.hash if ps is not None else NO_POLICY_SET,
        "time": now,
    }


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


def _deny(head: _Head, context_digest: str, facts_digest: str, error: str) -> Decision:
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
