"""Plain facts about the sandbox, and how they become Cedar entities.

The callers of the decision point (the registry, the coordinator, a company's node, the API)
describe the world with these small frozen dataclasses; nothing here knows of a database,
Flower or HTTP. :func:`build_entities` turns a request's facts into Cedar's entity JSON,
adding the attributes Cedar cannot work out for itself:

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

import dataclasses
import math
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from types import UnionType
from typing import Any, ClassVar

from policies.tiers import GRADES, TierConfig

NAMESPACE = "Sandbox"
COMPANY_STATUSES = ("active", "suspended")
# Cedar's decimal: a signed 64-bit integer of ten-thousandths.
_DECIMAL_PLACES = Decimal("0.0001")
_DECIMAL_LIMIT = Decimal("922337203685477.5807")


class FactsError(ValueError):
    """The facts of a request are missing, malformed or contradict each other."""


# ---- who acts -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompanyFacts:
    KIND: ClassVar[str] = "Company"
    id: str
    industry: str
    status: str = "active"

    def __post_init__(self) -> None:
        if self.status not in COMPANY_STATUSES:
            raise FactsError(f"company status {self.status!r} is not one of {COMPANY_STATUSES}")


@dataclass(frozen=True, slots=True)
class EngineerFacts:
    KIND: ClassVar[str] = "Engineer"
    id: str


@dataclass(frozen=True, slots=True)
class RegulatorFacts:
    KIND: ClassVar[str] = "Regulator"
    id: str


@dataclass(frozen=True, slots=True)
class OperatorFacts:
    KIND: ClassVar[str] = "Operator"
    id: str


# ---- what is acted on -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegistryFacts:
    """The sandbox itself, the resource of ``join``. Its classified industries come from the
    active policy set's ``tiers.toml``."""

    KIND: ClassVar[str] = "Registry"
    id: str = "sandbox"


@dataclass(frozen=True, slots=True)
class AuditLogFacts:
    """The audit ledger, the resource of ``read_audit`` and ``export_audit``."""

    KIND: ClassVar[str] = "AuditLog"
    id: str = "ledger"


@dataclass(frozen=True, slots=True)
class DatasetFacts:
    """A dataset's manifest: whose it is, its industry, its grade, whether it holds personal
    data."""

    KIND: ClassVar[str] = "Dataset"
    id: str
    company: str
    industry: str
    grade: str
    personal_data: bool

    def __post_init__(self) -> None:
        if self.grade not in GRADES:
            raise FactsError(f"dataset {self.id}: grade {self.grade!r} is not one of {GRADES}")


@dataclass(frozen=True, slots=True)
class ConsentFacts:
    """A company's grant of one dataset to one purpose, until ``expires_at`` (UTC)."""

    KIND: ClassVar[str] = "Consent"
    id: str
    company: str
    dataset: str
    purpose: str
    expires_at: datetime
    revoked: bool = False

    def __post_init__(self) -> None:
        if self.expires_at.tzinfo is None:
            raise FactsError(f"consent {self.id}: expires_at must carry a time zone")

    def live_at(self, now: datetime) -> bool:
        """Neither revoked nor expired at ``now``."""
        return not self.revoked and now < self.expires_at


@dataclass(frozen=True, slots=True)
class JobFacts:
    """A filed job. ``dp_epsilon`` is the job's differential-privacy budget per company, or
    ``None`` when the job trains without differential privacy. ``participants`` are the
    companies still taking part; ``datasets`` the datasets the job uses."""

    KIND: ClassVar[str] = "Job"
    id: str
    engineer: str
    purpose: str
    participants: tuple[str, ...]
    datasets: tuple[str, ...]
    secure_aggregation: bool
    dp_epsilon: Decimal | None
    approved: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "participants", tuple(self.participants))
        object.__setattr__(self, "datasets", tuple(self.datasets))
        if self.dp_epsilon is not None:
            object.__setattr__(self, "dp_epsilon", _decimal(self.dp_epsilon))
            if self.dp_epsilon <= 0:
                raise FactsError(f"job {self.id}: dp_epsilon must be above 0 (or None: no DP)")


ACCOUNT_HOLDERS = {
    "company": "Company",
    "engineer": "Engineer",
    "regulator": "Regulator",
    "operator": "Operator",
}


@dataclass(frozen=True, slots=True)
class AccountFacts:
    """A principal's account with the API, the resource of ``register_principal`` and
    ``manage_tokens``. It lies within its holder (``Sandbox::Engineer::"eve"`` holds
    ``Sandbox::Account::"engineer:eve"``), so a policy can say "the principal's own account"."""

    KIND: ClassVar[str] = "Account"
    role: str
    holder: str
    status: str = "active"

    def __post_init__(self) -> None:
        if self.role not in ACCOUNT_HOLDERS:
            raise FactsError(f"account role {self.role!r} is not one of {tuple(ACCOUNT_HOLDERS)}")

    @property
    def id(self) -> str:
        return f"{self.role}:{self.holder}"


@dataclass(frozen=True, slots=True)
class PolicySetFacts:
    """A candidate policy set, the resource of ``activate_policy``."""

    KIND: ClassVar[str] = "PolicySet"
    hash: str
    signature_valid: bool
    validated: bool
    bootstrap: bool = False

    @property
    def id(self) -> str:
        return self.hash


Principal = CompanyFacts | EngineerFacts | RegulatorFacts | OperatorFacts
Resource = (
    RegistryFacts
    | AuditLogFacts
    | DatasetFacts
    | ConsentFacts
    | JobFacts
    | PolicySetFacts
    | CompanyFacts
    | AccountFacts
)
Facts = Principal | Resource
FACT_TYPES: dict[str, type] = {
    cls.KIND: cls
    for cls in (
        CompanyFacts,
        EngineerFacts,
        RegulatorFacts,
        OperatorFacts,
        RegistryFacts,
        AuditLogFacts,
        DatasetFacts,
        ConsentFacts,
        JobFacts,
        PolicySetFacts,
        AccountFacts,
    )
}


# ---- contexts -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoundContext:
    """Context of ``participate_in_round``: the company's privacy spend so far for the job's
    purpose (over all jobs) and what the next round will cost it."""

    round: int
    epsilon_spent: Decimal
    epsilon_next: Decimal

    def as_context(self) -> dict[str, Any]:
        spent, nxt = Decimal(self.epsilon_spent), Decimal(self.epsilon_next)
        return {
            "round": self.round,
            "epsilon_spent": spent,
            "epsilon_next": nxt,
            "epsilon_after": spent + nxt,
        }


@dataclass(frozen=True, slots=True)
class DatasetReadContext:
    """Context of ``read_dataset``: the job whose task asks the node to read the dataset."""

    job: JobFacts

    def as_context(self) -> dict[str, Any]:
        return {"job": self.job}


@dataclass(frozen=True, slots=True)
class ReleaseContext:
    """Context of ``release_model``: the findings of the release assessment."""

    worst_company_gap: Decimal
    calibration_error: Decimal
    robustness_drop: Decimal = Decimal(0)
    companies_not_assessed: int = 0

    def as_context(self) -> dict[str, Any]:
        return {
            "worst_company_gap": Decimal(self.worst_company_gap),
            "calibration_error": Decimal(self.calibration_error),
            "robustness_drop": Decimal(self.robustness_drop),
            "companies_not_assessed": int(self.companies_not_assessed),
        }


@dataclass(frozen=True, slots=True)
class AuditScope:
    """Context of ``read_audit`` / ``export_audit``: entries about one company, one job, or
    (neither given) all entries."""

    company: CompanyFacts | None = None
    job: JobFacts | None = None

    def as_context(self) -> dict[str, Any]:
        scope: dict[str, Any] = {}
        if self.company is not None:
            scope["company"] = self.company
        if self.job is not None:
            scope["job"] = self.job
        return scope


@dataclass(frozen=True, slots=True)
class JobListScope:
    """Context of ``list_jobs``: the jobs one engineer filed, the jobs one company takes part
    in, or (neither given) all jobs."""

    engineer: EngineerFacts | None = None
    company: CompanyFacts | None = None

    def as_context(self) -> dict[str, Any]:
        scope: dict[str, Any] = {}
        if self.engineer is not None:
            scope["engineer"] = self.engineer
        if self.company is not None:
            scope["company"] = self.company
        return scope


# ---- turning facts into Cedar JSON ----------------------------------------------------------


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


def _decimal(value: Decimal | float | int | str) -> Decimal:
    try:
        number = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise FactsError(f"{value!r} is not a number") from None
    if not number.is_finite():
        raise FactsError(f"{value!r} is not a finite number")
    return number


def cedar_decimal(value: Decimal | float) -> dict[str, Any]:
    """A number as Cedar's ``decimal`` (four decimal places).

    Rounds towards +infinity: every decimal the policies compare (privacy spend, gaps,
    calibration errors) is one where larger is riskier, so rounding never lets a value slip
    under a cap.
    """
    number = _decimal(value).quantize(_DECIMAL_PLACES, rounding=ROUND_CEILING)
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


def context_mapping(context: Any) -> Mapping[str, Any]:
    """A context given as a mapping, as one of the context classes above, or as ``None``."""
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
            "release_max_worst_company_gap": cedar_decimal(params.release_max_worst_company_gap),
            "release_max_calibration_error": cedar_decimal(params.release_max_calibration_error),
            "release_max_robustness_drop": cedar_decimal(params.release_max_robustness_drop),
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


# ---- facts as JSON (request files, policy test cases) ---------------------------------------


def facts_from_dict(raw: Mapping[str, Any]) -> Any:
    """Facts from their JSON form: ``{"type": "Company", "id": "acme", "industry": ...}``.

    Times are ISO 8601 strings with a zone (``"2030-01-01T00:00:00Z"``); decimals are strings
    or numbers; sets are lists.
    """
    kind = raw.get("type")
    cls = FACT_TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise FactsError(f"unknown fact type {kind!r}; expected one of {sorted(FACT_TYPES)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    extra = set(raw) - names - {"type"}
    if extra:
        raise FactsError(f"{kind} facts have no field(s) {sorted(extra)}")
    values = {}
    for name, value in raw.items():
        if name == "type":
            continue
        values[name] = _coerce(hints[name], value, f"{kind}.{name}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise FactsError(f"{kind} facts: {exc}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    options = typing.get_args(hint) if isinstance(hint, UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise FactsError(f"{where} may not be null")
    kind = next(o for o in options if o is not type(None))
    if kind is datetime:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            raise FactsError(f"{where}: {value!r} is not an ISO 8601 time") from None
        if moment.tzinfo is None:
            raise FactsError(f"{where}: {value!r} has no time zone")
        return moment.astimezone(UTC)
    if kind is Decimal:
        if isinstance(value, bool):
            raise FactsError(f"{where}: {value!r} is not a number")
        return _decimal(value)
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise FactsError(f"{where} must be a list of strings")
        return tuple(value)
    if kind in (bool, str, int) and type(value) is not kind:
        raise FactsError(f"{where} must be a {kind.__name__}, not {value!r}")
    return value


def facts_to_dict(facts: Any) -> dict[str, Any]:
    """The JSON form that :func:`facts_from_dict` reads."""
    out: dict[str, Any] = {"type": facts.KIND}
    for f in dataclasses.fields(facts):
        value = getattr(facts, f.name)
        if isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat().replace("+00:00", "Z")
        elif isinstance(value, Decimal):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out
