"""Requests and policy test cases as JSON files.

A request (``sandbox policy explain REQUEST.json``)::

    {
      "principal": {"type": "Engineer", "id": "eve"},
      "action": "submit_job",
      "resource": {"type": "Job", "id": "j1", ...},
      "context": {...},
      "entities": [{"type": "Dataset", ...}, {"type": "Consent", ...}]
    }

A facts object has a ``type`` (Company, Engineer, Regulator, Operator, Registry, AuditLog,
Dataset, Consent, Job, PolicySet) and the fields of the matching class in
:mod:`policies.facts`. A context is either plain values (decimals as strings, e.g.
``"0.05"``; facts objects where the schema wants an entity) or a typed context:
``{"type": "RoundContext", "round": 2, "epsilon_spent": "1.0", "epsilon_next": "0.5"}``,
likewise ``ReleaseContext``, ``AuditScope``, ``DatasetReadContext`` and ``JobListScope``.

A case file (``policies/tests/*.json``) adds a library of named facts and a list of cases::

    {
      "description": "...",
      "now": "2026-01-01T00:00:00Z",            (optional: the decision time)
      "facts": {"eve": {"type": "Engineer", "id": "eve"}, ...},
      "cases": [
        {"name": "...", "principal": "eve", "action": "submit_job",
         "resource": {"like": "job", "secure_aggregation": false},
         "expect": "deny", "policies": ["tier.high.secure_aggregation"]}
      ]
    }

``"facts_from": ["_facts.json"]`` first loads the library of a shared file beside it.
In a case, a string names a fact of the library, and ``{"like": NAME, ...}`` is that fact with
some fields changed. ``entities`` defaults to the whole library; a fact of the request itself
replaces the library's fact with the same id. ``policies`` lists the ids of the policies that
must decide (``[]`` for "nothing permits it").
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from policies.engine import Decision, MemoryRecorder, PolicyDecisionPoint
from policies.facts import (
    AuditScope,
    DatasetReadContext,
    FactsError,
    JobFiguresContext,
    JobListScope,
    ReleaseContext,
    ReviewContext,
    RoundContext,
    facts_from_dict,
)
from policies.policyset import DEFAULT_POLICY_DIR, LoadedPolicySet

CASES_DIR = DEFAULT_POLICY_DIR / "tests"
_CONTEXT_TYPES = {
    "RoundContext": RoundContext,
    "ReleaseContext": ReleaseContext,
    "ReviewContext": ReviewContext,
    "AuditScope": AuditScope,
    "DatasetReadContext": DatasetReadContext,
    "JobFiguresContext": JobFiguresContext,
    "JobListScope": JobListScope,
}


@dataclass(frozen=True)
class Request:
    """One request, as facts."""

    principal: Any
    action: str
    resource: Any
    context: Any
    entities: tuple[Any, ...] = ()

    def decide(self, pdp: PolicyDecisionPoint) -> Decision:
        return pdp.decide(self.principal, self.action, self.resource, self.context, self.entities)


@dataclass(frozen=True)
class Case:
    file: str
    name: str
    request: Request
    expect_allowed: bool
    expect_policies: frozenset[str]
    now: datetime | None = None


@dataclass(frozen=True)
class CaseResult:
    case: Case
    decision: Decision

    @property
    def passed(self) -> bool:
        """Allowed or denied as expected, by exactly the expected policies, and without
        errors (a denial for an error is not the denial a case describes)."""
        return (
            not self.decision.errors
            and self.decision.allowed == self.case.expect_allowed
            and set(self.decision.policies) == self.case.expect_policies
        )


@dataclass
class _Library:
    facts: Mapping[str, dict[str, Any]] = field(default_factory=dict)

    def resolve(self, value: Any, where: str) -> Any:
        """Facts from a library name, a ``like`` object, or an inline object."""
        if isinstance(value, str):
            if value not in self.facts:
                raise FactsError(f"{where}: no fact named {value!r} in the library")
            return facts_from_dict(self.facts[value])
        if isinstance(value, Mapping) and "like" in value:
            base = dict(self.facts.get(value["like"]) or {})
            if not base:
                raise FactsError(f"{where}: no fact named {value['like']!r} in the library")
            base.update({k: v for k, v in value.items() if k != "like"})
            return facts_from_dict(base)
        if isinstance(value, Mapping):
            return facts_from_dict(value)
        raise FactsError(f"{where}: expected a fact, got {value!r}")

    def context(self, raw: Any, where: str) -> Any:
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise FactsError(f"{where}: a context is an object")
        kind = raw.get("type")
        if kind is None:
            return {k: self._value(v, f"{where}.{k}") for k, v in raw.items()}
        cls = _CONTEXT_TYPES.get(kind)
        if cls is None:
            raise FactsError(f"{where}: unknown context type {kind!r}")
        hints = typing.get_type_hints(cls)
        values = {}
        for key, value in raw.items():
            if key == "type":
                continue
            wants_facts = any(hasattr(t, "KIND") for t in typing.get_args(hints.get(key)))
            wants_facts = wants_facts or hasattr(hints.get(key), "KIND")
            if wants_facts and value is not None:
                values[key] = self.resolve(value, f"{where}.{key}")
            else:
                values[key] = self._value(value, f"{where}.{key}")
        try:
            return cls(**values)
        except TypeError as exc:
            raise FactsError(f"{where}: {exc}") from None

    def _value(self, value: Any, where: str) -> Any:
        if isinstance(value, Mapping) and ("like" in value or "type" in value):
            return self.resolve(value, where)
        return value


def parse_request(raw: Mapping[str, Any], library: _Library | None = None) -> Request:
    """A request from its JSON form (see the module docstring)."""
    lib = library or _Library()
    for key in ("principal", "action", "resource"):
        if key not in raw:
            raise FactsError(f"a request needs {key!r}")
    principal = lib.resolve(raw["principal"], "principal")
    resource = lib.resolve(raw["resource"], "resource")
    context = lib.context(raw.get("context"), "context")
    if "entities" in raw:
        entities = [lib.resolve(e, f"entities[{i}]") for i, e in enumerate(raw["entities"])]
    else:
        entities = [lib.resolve(name, name) for name in lib.facts]
    own = {(principal.KIND, principal.id), (resource.KIND, resource.id)}
    for value in _context_facts(context):
        own.add((value.KIND, value.id))
    entities = [e for e in entities if (e.KIND, e.id) not in own]
    return Request(principal, str(raw["action"]), resource, context, tuple(entities))


def _context_facts(context: Any) -> list[Any]:
    values = context.as_context() if hasattr(context, "as_context") else (context or {})
    return [v for v in values.values() if hasattr(v, "KIND")]


def load_request(path: Path) -> Request:
    return parse_request(json.loads(path.read_text(encoding="utf-8")))


def load_cases(path: Path) -> list[Case]:
    """The cases of one case file."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    facts: dict[str, Any] = {}
    for name in raw.get("facts_from", []):
        facts.update(json.loads((path.parent / name).read_text(encoding="utf-8"))["facts"])
    facts.update(raw.get("facts", {}))
    library = _Library(facts)
    now = _time(raw["now"]) if "now" in raw else None
    cases = []
    for i, item in enumerate(raw.get("cases", [])):
        name = item.get("name") or f"case {i}"
        where = f"{path.name}: {name}"
        expect = item.get("expect")
        if expect not in ("allow", "deny") or not isinstance(item.get("policies"), list):
            raise FactsError(f"{where}: needs expect (allow/deny) and a list of policies")
        try:
            request = parse_request(item, library)
        except FactsError as exc:
            raise FactsError(f"{where}: {exc}") from None
        cases.append(
            Case(path.name, name, request, expect == "allow", frozenset(item["policies"]), now)
        )
    return cases


def _time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise FactsError(f"time {text!r} has no time zone")
    return moment.astimezone(UTC)


def case_files(cases_dir: Path = CASES_DIR) -> list[Path]:
    """The case files of a folder; files whose name starts with ``_`` are shared fact
    libraries, not cases."""
    return sorted(p for p in cases_dir.glob("*.json") if not p.name.startswith("_"))


def run_cases(policy_set: LoadedPolicySet, cases: list[Case]) -> list[CaseResult]:
    """Decide every case against ``policy_set`` (each with its file's time, if it sets one)."""
    results = []
    for case in cases:
        moment = case.now
        clock = (lambda m=moment: m) if moment is not None else (lambda: datetime.now(UTC))
        pdp = PolicyDecisionPoint(policy_set, MemoryRecorder(), clock=clock)
        results.append(CaseResult(case, case.request.decide(pdp)))
    return results
