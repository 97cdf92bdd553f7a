"""A job's settlement statement: what each company contributed, what compute it spent, what
vouchers covered, and its net; signed with the operator's key so that anyone holding the
public key can check it, and recomputable from its own figures.

All amounts are whole cents. The declared value is shared out by the contribution shares
with the largest-remainder method, so the companies' amounts add up to the value exactly.
A company's compute cost prices what its node metered and signed in its receipts (CPU hours,
gigabytes in and out, tasks served); its vouchers pay that cost first, the rest is billed; its net is its
amount minus its cost plus the vouchers applied.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sandbox import identity
from sandbox.canonical import canonical_json


class CompanyLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    company: str
    share: float = Field(ge=0, le=1)
    amount: int
    cpu_seconds: float = Field(ge=0)
    bytes: int = Field(ge=0)
    metered_tasks: int = Field(ge=0)
    compute_cost: int = Field(ge=0)
    vouchers: int = Field(ge=0)
    billed: int = Field(ge=0)
    net: int


class Statement(BaseModel):
    """What the operator signs (canonical JSON, RFC 8785)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: Literal["sandbox-settlement/v1"] = "sandbox-settlement/v1"
    job: str
    revision: int = Field(ge=1)
    currency: str
    value: int = Field(ge=0)
    method: str
    prices: dict[str, str]
    companies: tuple[CompanyLine, ...]
    coordinator: dict[str, float] | None = None
    """The coordinator's own CPU and wall seconds for the job (the operator's side; not
    billed to the companies)."""
    settled_by: str
    time: str

    def canonical(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))


def cents(amount: Decimal) -> int:
    return int((amount * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def apportion(value: int, shares: dict[str, float]) -> dict[str, int]:
    """``value`` cents split by ``shares`` (normalised), whole cents that add up to ``value``
    exactly (largest remainder; ties by company id)."""
    total = sum(max(0.0, s) for s in shares.values())
    if value == 0 or total <= 0:
        return {company: 0 for company in shares}
    exact = {c: value * max(0.0, s) / total for c, s in shares.items()}
    floors = {c: math.floor(v) for c, v in exact.items()}
    left = value - sum(floors.values())
    order = sorted(exact, key=lambda c: (-(exact[c] - floors[c]), c))
    for company in order[:left]:
        floors[company] += 1
    return floors


def compute_cost(
    cpu_seconds: float, transferred: int, tasks: int, prices: dict[str, Decimal]
) -> int:
    """The price in cents of ``cpu_seconds`` of CPU, ``transferred`` bytes and ``tasks``
    tasks served, at ``prices`` (per CPU-hour, gigabyte and task)."""
    hours = Decimal(str(cpu_seconds)) / 3600
    gigabytes = Decimal(transferred) / 10**9
    return cents(hours * prices["cpu_hour"] + gigabytes * prices["gigabyte"]
                 + tasks * prices["task"])  # fmt: skip


def line(
    company: str, share: float, amount: int, cpu_seconds: float, transferred: int, tasks: int,
    cost: int, voucher_balance: int,
) -> CompanyLine:  # fmt: skip
    """A company's line: its vouchers pay its cost first (up to their balance)."""
    vouchers = min(cost, max(0, voucher_balance))
    return CompanyLine(
        company=company, share=round(share, 6), amount=amount,
        cpu_seconds=round(cpu_seconds, 6), bytes=transferred, metered_tasks=tasks,
        compute_cost=cost, vouchers=vouchers, billed=cost - vouchers,
        net=amount - cost + vouchers,
    )  # fmt: skip


def problems(statement: Statement) -> list[str]:
    """What does not add up in a statement (empty when everything does)."""
    found = []
    if sum(c.amount for c in statement.companies) != statement.value:
        found.append("the companies' amounts do not add up to the declared value")
    for c in statement.companies:
        if c.net != c.amount - c.compute_cost + c.vouchers:
            found.append(f"{c.company}'s net is not its amount minus its cost plus its vouchers")
        if c.billed != c.compute_cost - c.vouchers or c.vouchers > c.compute_cost:
            found.append(f"{c.company}'s billed cost is not its cost less its vouchers")
    return found


def sign_statement(key: object, statement: Statement) -> tuple[str, str]:
    body = statement.canonical()
    return body.decode("utf-8"), identity.sign(key, body)  # type: ignore[arg-type]


def verify_statement(text: str, signature: str, operator_key: str) -> Statement:
    """The statement, if it is canonical, signed with the operator's key and adds up."""
    statement = Statement.model_validate_json(text)
    if statement.canonical() != text.encode("utf-8"):
        raise ValueError("the settlement statement is not in canonical form")
    if not identity.verify(operator_key, text.encode("utf-8"), signature):
        raise ValueError("the settlement statement is not signed with the operator's key")
    found = problems(statement)
    if found:
        raise ValueError("; ".join(found))
    return statement
