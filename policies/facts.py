"""Plain facts about the sandbox: who acts, what is acted on, and the context of a request.

The callers of the decision point (the registry, the coordinator, a company's node, the API)
describe the world with these small frozen dataclasses; nothing here knows of a database,
Flower, HTTP or Cedar (:mod:`policies.entities` turns facts into Cedar's entity JSON). Facts
also have a JSON form, for request files and policy test cases (:func:`facts_from_dict`).
A fact that is malformed on its own raises :class:`FactsError`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from types import UnionType
from typing import Any, ClassVar

from sandbox.vocabulary import GRADES

COMPANY_STATUSES = ("active", "suspended")


class FactsError(ValueError):
    """The facts of a request are missing, malformed or contradict each other."""


def finite_decimal(value: Decimal | float | int | str) -> Decimal:
    """``value`` as a Decimal; :class:`FactsError` if it is no number or not finite."""
    try:
        number = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise FactsError(f"{value!r} is not a number") from None
    if not number.is_finite():
        raise FactsError(f"{value!r} is not a finite number")
    return number


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
            object.__setattr__(self, "dp_epsilon", finite_decimal(self.dp_epsilon))
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
class JobFiguresContext:
    """Context of ``read_job_figures``: the job whose figures are read."""

    job: JobFacts

    def as_context(self) -> dict[str, Any]:
        return {"job": self.job}


@dataclass(frozen=True, slots=True)
class ReleaseContext:
    """Context of ``release_model``: the findings of the release assessment.

    ``worst_company_gap`` is the largest point estimate of a company's AUC gap to its own
    model; ``worst_company_gap_low`` and ``_high`` are the largest lower and upper bounds of
    the companies' 95% intervals of that gap (unset: the point estimate, as when no interval
    was measured). ``fewest_test_positives`` and ``_negatives`` are the smallest counts of each
    class on any assessing company's test split. ``evidence_reviewed``: a regulator reviewed
    the assessment's thin evidence and approved the release."""

    worst_company_gap: Decimal
    calibration_error: Decimal
    robustness_drop: Decimal = Decimal(0)
    companies_not_assessed: int = 0
    worst_company: str = "none"
    worst_company_gap_low: Decimal | None = None
    worst_company_gap_high: Decimal | None = None
    fewest_test_positives: int = 1_000_000
    fewest_test_negatives: int = 1_000_000
    evidence_reviewed: bool = False
    fairness_tpr_gap: Decimal = Decimal(0)
    fairness_fpr_gap: Decimal = Decimal(0)

    def as_context(self) -> dict[str, Any]:
        point = Decimal(self.worst_company_gap)
        low, high = self.worst_company_gap_low, self.worst_company_gap_high
        return {
            "worst_company": self.worst_company,
            "worst_company_gap": point,
            "worst_company_gap_low": point if low is None else Decimal(low),
            "worst_company_gap_high": point if high is None else Decimal(high),
            "fewest_test_positives": int(self.fewest_test_positives),
            "fewest_test_negatives": int(self.fewest_test_negatives),
            "evidence_reviewed": bool(self.evidence_reviewed),
            "calibration_error": Decimal(self.calibration_error),
            "robustness_drop": Decimal(self.robustness_drop),
            "fairness_tpr_gap": Decimal(self.fairness_tpr_gap),
            "fairness_fpr_gap": Decimal(self.fairness_fpr_gap),
            "companies_not_assessed": int(self.companies_not_assessed),
        }


@dataclass(frozen=True, slots=True)
class ReviewContext:
    """Context of ``review_release``: whether the job's latest release decision holds its
    model for a regulator's review (insufficient evidence)."""

    held_for_review: bool = False

    def as_context(self) -> dict[str, Any]:
        return {"held_for_review": bool(self.held_for_review)}


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


Context = RoundContext | DatasetReadContext | ReleaseContext | AuditScope | JobListScope


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
        return finite_decimal(value)
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise FactsError(f"{where} must be a list of strings")
        return tuple(value)
    if kind in (bool, str, int) and type(value) is not kind:
        raise FactsError(f"{where} must be a {kind.__name__}, not {value!r}")
    return value
