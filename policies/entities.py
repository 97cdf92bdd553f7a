"""How facts become Cedar entity JSON: the context and the entities of one request.

:func:`build_entities` adds the attributes Cedar cannot work out for itself:

- ``Consent.live``: not revoked and not expired at the time of the decision;
- ``Job.tier``, ``industries``, ``grades``, ``personal_data``: from the job's datasets, with
  the tier classified by ``tiers.toml``;
- ``Job.consenting_companies``: the participants each of whose datasets in the job has a live
  consent for the job's purpose (Cedar cannot say "for every element of a set", so the
  decision point computes the set and the policy compares sets).

Facts that contradict each other (two different facts for one id, a job naming a dataset no
fact describes, a dataset owned by a non-participant) raise :class:`FactsError`; the decision
point turns that into a denial.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any

from policies.facts import (
    ACCOUNT_HOLDERS,
    AccountFacts,
    AuditLogFacts,
    CompanyFacts,
    ConsentFacts,
    Context,
    DatasetFacts,
    EngineerFacts,
    FactsError,
    JobFacts,
    OperatorFacts,
    PolicySetFacts,
    RegistryFacts,
    RegulatorFacts,
    finite_decimal,
)
from policies.tiers import TierConfig

NAMESPACE = "Sandbox"
# Cedar's decimal: a signed 64-bit integer of ten-thousandths.
_DECIMAL_PLACES = Decimal("0.0001")
_DECIMAL_LIMIT = Decimal("922337203685477.5807")


def uid(kind: str, ident: str) -> dict[str, str]:
    return {"type": f"{NAMESPACE}::{kind}", "id": ident}


def uid_of(facts: Any) -> dict[str, str]:
    return uid(facts.KIND, facts.id)


def uid_text(facts: Any) -> str:
    """The Cedar spelling of a fact's entity uid, e.g. ``Sandbox::Company::"acme"``."""
    escaped = facts.id.replace("\\", "\\\\").replace('"', '\\"')
    return f'{NAMESPACE}::{facts.KIND}::"{escaped}"'


def _ref(kind: str, ident: str) -> dict[str, Any]:
    return {"__entity": uid(kind, ident)}


def cedar_decimal(value: Decimal | float) -> dict[str, Any]:
    """A number as Cedar's ``decimal`` (four decimal places).

    Rounds towards +infinity: every decimal the policies compare (privacy spend, gaps,
    calibration errors) is one where larger is riskier, so rounding never lets a value slip
    under a cap.
    """
    number = finite_decimal(value).quantize(_DECIMAL_PLACES, rounding=ROUND_CEILING)
    if abs(number) > _DECIMAL_LIMIT:
        raise FactsError(f"{value!r} is outside the range of Cedar's decimal")
    return {"__extn": {"fn": "decimal", "arg": str(number)}}


def epoch_seconds(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise FactsError("a time must carry a time zone")
    return math.floor(moment.timestamp())


@dataclass
class _Collected:
    """Facts of one request, one per entity uid; ``reached`` are those Cedar will see."""

    by_uid: dict[tuple[str, str], Any] = field(default_factory=dict)
    reached: dict[tuple[str, str], Any] = field(default_factory=dict)

    def add(self, facts: Any, *, reached: bool = False) -> None:
        key = (facts.KIND, facts.id)
        known = self.by_uid.get(key)
        if known is None:
            self.by_uid[key] = facts
        elif known != facts:
            raise FactsError(f"two different facts describe {facts.KIND} {facts.id!r}")
        if reached:
            self.reached[key] = facts


def cedar_value(value: Any, collected: _Collected) -> Any:
    """A Python value as Cedar JSON; facts objects become entity references and are added to
    the request's entities."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal | float):
        return cedar_decimal(value)
    if isinstance(value, datetime):
        return epoch_seconds(value)
    if hasattr(value, "KIND") and hasattr(value, "id"):
        collected.add(value, reached=True)
        return {"__entity": uid_of(value)}
    if isinstance(value, Mapping):
        return {str(k): cedar_value(v, collected) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [cedar_value(v, collected) for v in value]
    raise FactsError(f"cannot express {type(value).__name__} {value!r} in Cedar")


def context_mapping(context: Mapping[str, Any] | Context | None) -> Mapping[str, Any]:
    """A context given as a mapping, as one of the context classes of :mod:`policies.facts`
    (anything with ``as_context``), or as ``None``."""
    if context is None:
        return {}
    if hasattr(context, "as_context"):
        return context.as_context()
    if isinstance(context, Mapping):
        return context
    raise FactsError(f"a context must be a mapping, not {type(context).__name__}")


def build_entities(
    principal: Any,
    resource: Any,
    context: Mapping[str, Any],
    entities: Iterable[Any],
    *,
    now: datetime,
    tiers: TierConfig,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The Cedar context and the entities of one request: ``(context_json, entities_json)``.

    Cedar gets only the entities the request reaches: the principal, the resource, the facts
    in the context, the dataset of a consent, the tier of a job, and the Registry when it is
    the resource. The other facts (a job's datasets and consents) are used here, to work out
    the job's attributes, and Cedar never reads them; leaving them out matters, because
    parsing entities is the largest per-call cost of a Cedar evaluation.
    """
    collected = _Collected()
    collected.add(principal, reached=True)
    collected.add(resource, reached=True)
    for facts in entities:
        collected.add(facts)
    context_json = cedar_value(dict(context), collected)

    datasets = {f.id: f for f in collected.by_uid.values() if isinstance(f, DatasetFacts)}
    consents = [f for f in collected.by_uid.values() if isinstance(f, ConsentFacts)]
    for facts in list(collected.reached.values()):
        if isinstance(facts, ConsentFacts) and facts.dataset in datasets:
            collected.add(datasets[facts.dataset], reached=True)
    out = []
    tiers_used = set()
    for facts in collected.reached.values():
        if isinstance(facts, RegistryFacts):
            out.append(registry_entity(tiers, facts))
            continue
        entity = _entity(facts, datasets, consents, now, tiers)
        if isinstance(facts, JobFacts):
            tiers_used.add(entity["attrs"]["tier"]["__entity"]["id"])
        out.append(entity)
    out += [tier_entity(tiers, name) for name in sorted(tiers_used)]
    return context_json, out


def _entity(
    facts: Any,
    datasets: Mapping[str, DatasetFacts],
    consents: list[ConsentFacts],
    now: datetime,
    tiers: TierConfig,
) -> dict[str, Any]:
    parents: list[dict[str, str]] = []
    attrs: dict[str, Any]
    if isinstance(facts, CompanyFacts):
        attrs = {"industry": facts.industry, "status": facts.status}
    elif isinstance(facts, DatasetFacts):
        parents = [uid("Company", facts.company)]
        attrs = {
            "industry": facts.industry,
            "grade": facts.grade,
            "personal_data": facts.personal_data,
        }
    elif isinstance(facts, ConsentFacts):
        parents = [uid("Company", facts.company)]
        attrs = {
            "dataset": _ref("Dataset", facts.dataset),
            "purpose": facts.purpose,
            "expires_at": epoch_seconds(facts.expires_at),
            "revoked": facts.revoked,
            "live": facts.live_at(now),
        }
    elif isinstance(facts, JobFacts):
        attrs = _job_attrs(facts, datasets, consents, now, tiers)
    elif isinstance(facts, PolicySetFacts):
        attrs = {
            "hash": facts.hash,
            "signature_valid": facts.signature_valid,
            "validated": facts.validated,
            "bootstrap": facts.bootstrap,
        }
    elif isinstance(facts, AccountFacts):
        parents = [uid(ACCOUNT_HOLDERS[facts.role], facts.holder)]
        attrs = {"role": facts.role, "status": facts.status}
    elif isinstance(facts, EngineerFacts | RegulatorFacts | OperatorFacts | AuditLogFacts):
        attrs = {}
    else:
        raise FactsError(f"{type(facts).__name__} is not a kind of fact the policies know")
    return {"uid": uid_of(facts), "attrs": attrs, "parents": parents}


def _job_attrs(
    job: JobFacts,
    datasets: Mapping[str, DatasetFacts],
    consents: list[ConsentFacts],
    now: datetime,
    tiers: TierConfig,
) -> dict[str, Any]:
    used: list[DatasetFacts] = []
    for dataset_id in job.datasets:
        dataset = datasets.get(dataset_id)
        if dataset is None:
            raise FactsError(f"job {job.id} uses dataset {dataset_id!r}, but no facts describe it")
        if dataset.company not in job.participants:
            raise FactsError(
                f"job {job.id} uses dataset {dataset_id!r} of company {dataset.company!r}, "
                "which is not one of its participants"
            )
        used.append(dataset)
    industries = sorted({d.industry for d in used})
    grades = sorted({d.grade for d in used})
    live = {(c.company, c.dataset) for c in consents if c.purpose == job.purpose and c.live_at(now)}
    consenting = []
    for company in job.participants:
        own = [d.id for d in used if d.company == company]
        if own and all((company, d) in live for d in own):
            consenting.append(company)
    return {
        "engineer": _ref("Engineer", job.engineer),
        "purpose": job.purpose,
        "tier": _ref("Tier", tiers.risk_tier(industries, grades)),
        "industries": industries,
        "grades": grades,
        "personal_data": any(d.personal_data for d in used),
        "participants": [_ref("Company", c) for c in job.participants],
        "participant_count": len(set(job.participants)),
        "datasets": [_ref("Dataset", d) for d in job.datasets],
        "consenting_companies": [_ref("Company", c) for c in consenting],
        "secure_aggregation": job.secure_aggregation,
        "dp_enabled": job.dp_epsilon is not None,
        "dp_epsilon": cedar_decimal(job.dp_epsilon if job.dp_epsilon is not None else 0),
        "approved": job.approved,
    }


def tier_entity(tiers: TierConfig, name: str) -> dict[str, Any]:
    """The Tier entity with the numbers of ``tiers.toml``."""
    params = tiers.tiers[name]
    return {
        "uid": uid("Tier", name),
        "attrs": {
            "min_participants": params.min_participants,
            "dp_epsilon_cap": cedar_decimal(params.dp_epsilon_cap),
            "dataset_epsilon_cap": cedar_decimal(params.dataset_epsilon_cap),
            "release_max_worst_company_gap": cedar_decimal(params.release_max_worst_company_gap),
            "release_max_calibration_error": cedar_decimal(params.release_max_calibration_error),
            "release_max_robustness_drop": cedar_decimal(params.release_max_robustness_drop),
            "release_max_tpr_gap": cedar_decimal(params.release_max_tpr_gap),
            "release_max_fpr_gap": cedar_decimal(params.release_max_fpr_gap),
            "release_min_positives": params.release_min_positives,
            "release_min_negatives": params.release_min_negatives,
            "release_review_insufficient_evidence": params.release_review_insufficient_evidence,
            "release_require_every_company": params.release_require_every_company,
        },
        "parents": [],
    }


def registry_entity(tiers: TierConfig, registry: RegistryFacts) -> dict[str, Any]:
    """The Registry entity with the industries ``tiers.toml`` classifies."""
    return {
        "uid": uid_of(registry),
        "attrs": {"industries": sorted(tiers.industries)},
        "parents": [],
    }


def static_entities(tiers: TierConfig) -> list[dict[str, Any]]:
    """Every Tier entity and the Registry: what ``tiers.toml`` puts into Cedar."""
    return [tier_entity(tiers, name) for name in tiers.tiers] + [
        registry_entity(tiers, RegistryFacts())
    ]
