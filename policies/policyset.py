"""A policy set: the schema, the ``.cedar`` packs and ``tiers.toml``, read once, hashed,
parsed and validated.

The hash is what a regulator signs. It is computed over the very bytes that are parsed (read
once into memory), so a file changed between hashing and parsing cannot slip in.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cedarpy

from policies.entities import static_entities
from policies.tiers import TIERS_FILE, TierConfig, TierConfigError, parse_tier_config

SCHEMA_FILE = "schema.cedarschema"
POLICY_SUFFIX = ".cedar"
HASH_DOMAIN = b"sandbox-policy-set/v1\n"
DEFAULT_POLICY_DIR = Path(__file__).parent


class PolicySetError(ValueError):
    """A policy set cannot be loaded: a file is missing, does not parse or does not validate.

    ``problems`` lists every problem found, one readable line each.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """One policy of the set, as a person reads it. ``actions`` are the actions it is about
    (None: every action); ``annotations`` all its annotations (``@check`` marks a policy whose
    verdict is shown as a check, see :class:`policies.engine.CheckResult`)."""

    id: str
    effect: str
    reason: str
    file: str
    actions: tuple[str, ...] | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    def about(self, action: str) -> bool:
        return self.actions is None or action in self.actions


def policy_files(policy_dir: Path) -> dict[str, bytes]:
    """The files that make up the policy set in ``policy_dir``, by name, read once.

    The set is the schema, every ``*.cedar`` file and ``tiers.toml`` directly in the folder;
    sub-folders (such as the policy test cases) are not part of it.
    """
    names = [SCHEMA_FILE, TIERS_FILE]
    problems = [f"{policy_dir / n} is missing" for n in names if not (policy_dir / n).is_file()]
    if problems:
        raise PolicySetError(problems)
    names += sorted(p.name for p in policy_dir.glob(f"*{POLICY_SUFFIX}") if p.is_file())
    return {name: (policy_dir / name).read_bytes() for name in sorted(names)}


def hash_files(files: Mapping[str, bytes]) -> str:
    """SHA-256 (hex) over the files in name order: for each, its name, its length and its
    bytes, so that no two different sets of files share an encoding."""
    digest = hashlib.sha256(HASH_DOMAIN)
    for name in sorted(files):
        data = files[name]
        digest.update(f"{name}\n{len(data)}\n".encode())
        digest.update(data)
    return digest.hexdigest()


def policy_set_hash(policy_dir: Path) -> str:
    """The hash of the policy set in ``policy_dir``."""
    return hash_files(policy_files(policy_dir))


@dataclass(frozen=True, eq=False)
class LoadedPolicySet:
    """A parsed, validated policy set, ready for many decisions.

    Holds pre-parsed cedarpy handles: parsing the policies and the schema text would cost
    milliseconds on every Cedar call; with the handles the call costs tens of microseconds.
    """

    hash: str
    files: Mapping[str, bytes]
    policies: tuple[PolicyInfo, ...]
    tiers: TierConfig
    cedar_policies: cedarpy.PolicySet
    cedar_schema: cedarpy.Schema

    @property
    def reasons(self) -> Mapping[str, str]:
        return {p.id: p.reason for p in self.policies}

    def parsed_entities(self, text: str) -> cedarpy.Entities:
        """Entities JSON parsed and validated against this set's schema, remembered by their
        exact text: the same job's entity comes back in every participant's check of a round
        and in every read a node makes, and parsing it is most of a Cedar call's cost."""
        return _parse_entities(self, text)

    @classmethod
    def from_dir(cls, policy_dir: Path = DEFAULT_POLICY_DIR) -> LoadedPolicySet:
        return cls.from_files(policy_files(policy_dir))

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> LoadedPolicySet:
        """Parse and validate; raises :class:`PolicySetError` listing every problem."""
        files = dict(files)
        problems: list[str] = []
        texts: dict[str, str] = {}
        for name, data in files.items():
            try:
                texts[name] = data.decode("utf-8")
            except UnicodeDecodeError:
                problems.append(f"{name} is not UTF-8 text")
        if problems:
            raise PolicySetError(problems)

        try:
            tiers = parse_tier_config(texts[TIERS_FILE])
        except TierConfigError as exc:
            problems.append(str(exc))
        try:
            schema = cedarpy.Schema.from_str(texts[SCHEMA_FILE])
        except ValueError as exc:
            problems.append(f"{SCHEMA_FILE} does not parse: {exc}")

        policies: list[PolicyInfo] = []
        cedar_names = [n for n in sorted(texts) if n.endswith(POLICY_SUFFIX)]
        for name in cedar_names:
            try:
                policies += _policy_infos(name, texts[name])
            except ValueError as exc:
                problems.append(f"{name} does not parse: {exc}")
        problems += _annotation_problems(policies)
        if problems:
            raise PolicySetError(problems)

        text = "\n".join(texts[n] for n in cedar_names)
        result = cedarpy.validate_policies(text, schema)
        if not result.validation_passed:
            ids = result.id_annotations_by_policy_id
            raise PolicySetError(
                [
                    f"policy {ids.get(e.policy_id, e.policy_id) or '(unnamed)'}: {e.error}"
                    if e.policy_id
                    else e.error
                    for e in result.errors
                ]
            )
        try:
            cedarpy.Entities.from_json_str(json.dumps(static_entities(tiers)), schema)
        except ValueError as exc:
            raise PolicySetError([f"{TIERS_FILE} does not fit the schema: {exc}"]) from exc
        return cls(
            hash=hash_files(files),
            files=files,
            policies=tuple(policies),
            tiers=tiers,
            cedar_policies=cedarpy.PolicySet.from_str(text),
            cedar_schema=schema,
        )


@functools.lru_cache(maxsize=256)
def _parse_entities(policy_set: LoadedPolicySet, text: str) -> cedarpy.Entities:
    return cedarpy.Entities.from_json_str(text, policy_set.cedar_schema)


def _policy_infos(file: str, text: str) -> list[PolicyInfo]:
    est = json.loads(cedarpy.policies_to_json_str(text))
    out = []
    # policies_to_json_str numbers policies policy0, policy1, ... in source order.
    static = est.get("staticPolicies", {})
    for key in sorted(static, key=lambda k: int(re.sub(r"\D", "", k) or 0)):
        policy = static[key]
        notes = policy.get("annotations", {})
        out.append(
            PolicyInfo(
                id=notes.get("id") or "",
                effect=policy.get("effect", ""),
                reason=notes.get("reason") or "",
                file=file,
                actions=_actions(policy.get("action", {})),
                annotations={k: v or "" for k, v in notes.items()},
            )
        )
    if est.get("templates"):
        raise ValueError("templates are not used in the sandbox's policy packs")
    return out


def _actions(scope: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The actions a policy's scope names (None: any action)."""
    if scope.get("op") == "==":
        return (str(scope["entity"]["id"]),)
    if scope.get("op") == "in":
        found = scope.get("entities") or [scope.get("entity")]
        return tuple(str(e["id"]) for e in found if e)
    return None


OUTCOME_DENY = "deny"
OUTCOME_INSUFFICIENT_EVIDENCE = "insufficient-evidence"
OUTCOMES = (OUTCOME_DENY, OUTCOME_INSUFFICIENT_EVIDENCE)
"""What a forbid policy's denial means (``@outcome``; a deny unless it says otherwise): the
release gate tells a denial on the evidence from one for want of evidence."""


def _annotation_problems(policies: list[PolicyInfo]) -> list[str]:
    problems = []
    seen: dict[str, str] = {}
    for p in policies:
        if not p.id:
            problems.append(f"{p.file}: a {p.effect} policy has no @id")
            continue
        if not p.reason:
            problems.append(f"{p.file}: policy {p.id} has no @reason a person can read")
        if "check" in p.annotations and not p.annotations.get("passed"):
            problems.append(f"{p.file}: check {p.id} has no @passed a person can read")
        if p.annotations.get("outcome", OUTCOME_DENY) not in OUTCOMES:
            problems.append(
                f"{p.file}: policy {p.id} has @outcome {p.annotations['outcome']!r}; "
                f"known outcomes: {', '.join(OUTCOMES)}"
            )
        if p.id in seen:
            problems.append(f"policy id {p.id} is used twice ({seen[p.id]}, {p.file})")
        seen[p.id] = p.file
    return problems
