"""The words of a decision: a policy's ``@reason`` and ``@passed`` templates, filled in.

A policy says why it decided in its own words, with placeholders for the request's figures
(``{tier}``, ``{epsilon_after}``, ...); :class:`ReasonFiller` fills them from the Cedar JSON
the request was decided on, so the reason shows exactly what the policy saw.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from policies.entities import NAMESPACE, uid
from policies.policyset import LoadedPolicySet

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


class ReasonFiller:
    """Fills the placeholders of a policy's @reason from the request: ``{principal}``,
    ``{action}``, ``{resource}``, and, about the job of the request (the resource, or the
    context's job), ``{job}``, ``{tier}``, ``{participant_count}``, ``{without_consent}``,
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
        found = self.value_of(name)
        return placeholder if found is None else found

    def value_of(self, name: str) -> str | None:
        """The value a placeholder ``{name}`` stands for, or None when the request has none."""
        if name in self._basic:
            return self._basic[name]
        if self._details is None:
            self._details = self._work_out()
        return self._details.get(name)

    def _work_out(self) -> dict[str, str]:
        details = {k: _plain(v) for k, v in self._context.items() if not isinstance(v, dict)}
        details.update(
            {k: _plain(v) for k, v in self._context.items() if isinstance(v, dict) and _is_num(v)}
        )
        resource_uid = uid(self._resource.KIND, self._resource.id)
        job_uid: object = resource_uid
        if resource_uid["type"] != f"{NAMESPACE}::Job":
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
                "job": repr(job["uid"]["id"]),
                "tier": tier,
                "participant_count": str(attrs["participant_count"]),
                "without_consent": ", ".join(without) or "none",
                "dp_epsilon": _plain(attrs["dp_epsilon"]) if attrs["dp_enabled"] else "none",
                "min_participants": str(params.min_participants),
                "dp_epsilon_cap": str(params.dp_epsilon_cap),
                "release_max_worst_company_gap": str(params.release_max_worst_company_gap),
                "release_max_calibration_error": str(params.release_max_calibration_error),
                "release_max_robustness_drop": str(params.release_max_robustness_drop),
                "release_max_tpr_gap": str(params.release_max_tpr_gap),
                "release_max_fpr_gap": str(params.release_max_fpr_gap),
                "release_min_positives": str(params.release_min_positives),
                "release_min_negatives": str(params.release_min_negatives),
                "release_require_every_company": str(params.release_require_every_company).lower(),
            }
        )
        return details


def _is_num(value: Mapping[str, Any]) -> bool:
    """Whether a Cedar JSON value is a ``decimal``."""
    fn: object = value.get("__extn", {}).get("fn")
    return fn == "decimal"


def _plain(value: Any) -> str:
    """A Cedar JSON value as a person reads it (decimals without trailing zeros)."""
    if isinstance(value, dict) and _is_num(value):
        whole, _, fraction = value["__extn"]["arg"].partition(".")
        return f"{whole}.{fraction.rstrip('0') or '0'}"
    return str(value)
