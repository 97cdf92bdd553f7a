"""Risk tiers: classification of jobs by industry and data grade, and each tier's numbers.

Everything here is read from ``tiers.toml`` (part of the signed policy set). Python only
classifies (which tier) and hands the numbers to Cedar as attributes of a ``Tier`` entity;
the rules that compare against those numbers live in the ``.cedar`` packs. So each rule has
one home: a threshold in the TOML file, the comparison in a policy.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

from sandbox.vocabulary import GRADES

TIERS_FILE = "tiers.toml"
_TIER_NUMBERS = {
    "min_participants": int,
    "dp_epsilon_cap": Decimal,
    "dataset_epsilon_cap": Decimal,
    "release_max_worst_company_gap": Decimal,
    "release_max_calibration_error": Decimal,
    "release_max_robustness_drop": Decimal,
    "release_max_tpr_gap": Decimal,
    "release_max_fpr_gap": Decimal,
    "release_min_positives": int,
    "release_min_negatives": int,
    "release_review_insufficient_evidence": bool,
    "release_require_every_company": bool,
}


class TierConfigError(ValueError):
    """``tiers.toml`` is malformed or incomplete."""


@dataclass(frozen=True, slots=True)
class TierParameters:
    """The numbers one tier's rules compare against."""

    name: str
    min_participants: int
    dp_epsilon_cap: Decimal
    dataset_epsilon_cap: Decimal
    release_max_worst_company_gap: Decimal
    release_max_calibration_error: Decimal
    release_max_robustness_drop: Decimal
    release_max_tpr_gap: Decimal
    release_max_fpr_gap: Decimal
    release_min_positives: int
    release_min_negatives: int
    release_review_insufficient_evidence: bool
    release_require_every_company: bool


@dataclass(frozen=True, slots=True)
class SettlementTerms:
    """The written terms of settlement (``[settlement]``): the currency, the price of the
    companies' metered compute, and who may get a compute voucher and how much. Amounts are
    in minor units (cents) wherever they are stored."""

    currency: str
    cpu_hour: Decimal
    """Price of one CPU-hour a company's node spends on a job's tasks."""
    gigabyte: Decimal
    """Price of one gigabyte a node sends or receives for a job."""
    task: Decimal
    """Price of one task a node serves (its share of orchestration, checks and receipts)."""
    voucher_max: Decimal
    """The largest compute voucher one issuance may grant."""
    small_company_rows: int
    """A company with fewer training rows than this is a small firm (eligible for vouchers)."""


@dataclass(frozen=True)
class TierConfig:
    """The parsed ``tiers.toml``."""

    tier_order: tuple[str, ...]
    unknown_industry: str
    industry_tiers: Mapping[str, str]
    grade_tiers: Mapping[str, str]
    tiers: Mapping[str, TierParameters]
    witness_quorum: int = 2
    """Cosignatures by registered witnesses that make a ledger checkpoint "witnessed"."""
    settlement: SettlementTerms = SettlementTerms(
        "EUR", Decimal(0), Decimal(0), Decimal(0), Decimal(0), 1
    )
    """The written terms of settlement; every parsed file states its own."""

    @property
    def industries(self) -> frozenset[str]:
        """Every industry the file classifies."""
        return frozenset(self.industry_tiers)

    def industry_tier(self, industry: str) -> str:
        return self.industry_tiers.get(industry, self.unknown_industry)

    def grade_tier(self, grade: str) -> str:
        try:
            return self.grade_tiers[grade]
        except KeyError:
            raise ValueError(
                f"unknown data grade {grade!r}; expected one of {sorted(self.grade_tiers)}"
            ) from None

    def risk_tier(self, industries: Iterable[str], grades: Iterable[str]) -> str:
        """The highest tier among the given industries and grades (the lowest tier if none).

        An industry the file does not list counts as ``unknown_industry``; an unknown grade
        raises ``ValueError``, since a grade is a closed vocabulary and guessing would be
        unsafe.
        """
        rank = {name: i for i, name in enumerate(self.tier_order)}
        found = [self.industry_tier(i) for i in industries]
        found += [self.grade_tier(g) for g in grades]
        return max(found, key=rank.__getitem__, default=self.tier_order[0])


def parse_tier_config(text: str) -> TierConfig:
    """Parse and check the text of ``tiers.toml``."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TierConfigError(f"{TIERS_FILE} is not valid TOML: {exc}") from exc
    if raw.get("version") != 1:
        raise TierConfigError(f"{TIERS_FILE}: version must be 1")
    order = tuple(_list_of_str(raw, "tier_order"))
    if len(order) == 0 or len(set(order)) != len(order):
        raise TierConfigError(f"{TIERS_FILE}: tier_order must name distinct tiers")
    unknown = raw.get("unknown_industry")
    if unknown not in order:
        raise TierConfigError(f"{TIERS_FILE}: unknown_industry must be one of {list(order)}")

    industry_tiers: dict[str, str] = {}
    for tier, names in _table(raw, "industries").items():
        if tier not in order:
            raise TierConfigError(f"{TIERS_FILE}: [industries] names unknown tier {tier!r}")
        for name in _list_of_str({"v": names}, "v"):
            if name in industry_tiers:
                raise TierConfigError(f"{TIERS_FILE}: industry {name!r} is listed twice")
            industry_tiers[name] = tier

    grade_tiers = {str(k): v for k, v in _table(raw, "grades").items()}
    if set(grade_tiers) != set(GRADES):
        raise TierConfigError(f"{TIERS_FILE}: [grades] must list exactly {list(GRADES)}")
    for grade, tier in grade_tiers.items():
        if tier not in order:
            raise TierConfigError(f"{TIERS_FILE}: grade {grade!r} maps to unknown tier {tier!r}")

    tiers_raw = _table(raw, "tiers")
    if set(tiers_raw) != set(order):
        raise TierConfigError(f"{TIERS_FILE}: [tiers.*] must have one table per tier {list(order)}")
    tiers = {name: _tier_parameters(name, tiers_raw[name]) for name in order}
    return TierConfig(order, unknown, industry_tiers, grade_tiers, tiers, _witness_quorum(raw),
                      _settlement(raw))  # fmt: skip


_SETTLEMENT_KEYS = {
    "currency", "cpu_hour", "gigabyte", "task", "voucher_max", "small_company_rows"
}  # fmt: skip


def _settlement(raw: Mapping[str, Any]) -> SettlementTerms:
    terms = _table(raw, "settlement")
    problem = f"{TIERS_FILE}: [settlement] must hold exactly {sorted(_SETTLEMENT_KEYS)}"
    if set(terms) != _SETTLEMENT_KEYS:
        raise TierConfigError(problem)
    currency, rows = terms["currency"], terms["small_company_rows"]
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isupper()):
        raise TierConfigError(f"{problem}; currency is a three-letter code such as EUR")
    if type(rows) is not int or rows < 1:
        raise TierConfigError(f"{problem}; small_company_rows is a positive whole number")
    prices: dict[str, Decimal] = {}
    for key in ("cpu_hour", "gigabyte", "task", "voucher_max"):
        try:
            prices[key] = Decimal(str(terms[key]))
        except InvalidOperation:
            raise TierConfigError(f"{TIERS_FILE}: settlement.{key} is not a number") from None
        if not prices[key].is_finite() or prices[key] < 0:
            raise TierConfigError(f"{TIERS_FILE}: settlement.{key} must be a number >= 0")
    return SettlementTerms(currency, prices["cpu_hour"], prices["gigabyte"], prices["task"],
                           prices["voucher_max"], rows)  # fmt: skip


def _witness_quorum(raw: Mapping[str, Any]) -> int:
    ledger = _table(raw, "ledger")
    quorum = ledger.get("witness_quorum")
    if set(ledger) != {"witness_quorum"} or type(quorum) is not int or not 1 <= quorum <= 256:
        raise TierConfigError(
            f"{TIERS_FILE}: [ledger] must hold exactly witness_quorum, a whole number from 1 to 256"
        )
    return quorum


def _tier_parameters(name: str, raw: Any) -> TierParameters:
    if not isinstance(raw, dict) or set(raw) != set(_TIER_NUMBERS):
        raise TierConfigError(
            f"{TIERS_FILE}: [tiers.{name}] must have exactly the keys {sorted(_TIER_NUMBERS)}"
        )
    values: dict[str, Any] = {}
    for key, kind in _TIER_NUMBERS.items():
        value = raw[key]
        if kind is bool:
            if type(value) is not bool:
                raise TierConfigError(f"{TIERS_FILE}: tiers.{name}.{key} must be true or false")
            values[key] = value
            continue
        if kind is int:
            if type(value) is not int or value < 1:
                raise TierConfigError(
                    f"{TIERS_FILE}: tiers.{name}.{key} must be a positive integer"
                )
            values[key] = value
            continue
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise TierConfigError(f"{TIERS_FILE}: tiers.{name}.{key} is not a number") from None
        exponent = number.as_tuple().exponent  # an int for a finite number
        if not isinstance(exponent, int) or number < 0 or exponent < -4:
            raise TierConfigError(
                f"{TIERS_FILE}: tiers.{name}.{key} must be a number >= 0 with at most four "
                "decimal places"
            )
        values[key] = number
    return TierParameters(name=name, **values)


def _table(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    if not isinstance(value, dict):
        raise TierConfigError(f"{TIERS_FILE}: [{key}] table is missing")
    return value


def _list_of_str(raw: Mapping[str, Any], key: str) -> list[str]:
    value = raw.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TierConfigError(f"{TIERS_FILE}: {key} must be a list of strings")
    return value


@cache
def shipped_tier_config() -> TierConfig:
    """The ``tiers.toml`` shipped with this package."""
    return parse_tier_config((Path(__file__).parent / TIERS_FILE).read_text(encoding="utf-8"))


def risk_tier(
    industries: Iterable[str], grades: Iterable[str], config: TierConfig | None = None
) -> str:
    """The risk tier of a job over data of these industries and grades.

    ``config`` defaults to the shipped ``tiers.toml``; the decision point passes the
    configuration of its active policy set.
    """
    return (config or shipped_tier_config()).risk_tier(industries, grades)
