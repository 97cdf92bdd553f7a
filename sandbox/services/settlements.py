"""Settlement: compute vouchers, a completed job's signed settlement statement, and the
companies' contests of it. Every act is a policy decision in the ledger.

Vouchers are issued under the written terms of ``tiers.toml`` ``[settlement]`` (which the
regulator signs with the policy set): to a small firm or a first-time participant, up to a
maximum per issuance. A statement shares the job's declared value out by the contribution
estimate (its method named), prices the compute each company's node metered and signed in
its receipts, pays it from the company's vouchers first (those that expire first, first) and
bills the rest (:mod:`sandbox.protocol.settlement`). The operator's key signs it; an upheld
contest lets the engineer or the operator draw up a new revision.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sandbox import identity
from sandbox.errors import Conflict, Invalid, NotFound
from sandbox.governance import Annotation, Governance
from sandbox.ledger import LedgerRecord, Resource
from sandbox.protocol import settlement as protocol
from sandbox.registry import companies as company_store
from sandbox.registry import jobs as job_store
from sandbox.registry import settlements as store
from sandbox.registry.models import Settlement, SettlementDispute, Voucher, VoucherUse
from sandbox.services.base import actor_of, authorize, company_in_question
from sandbox.services.companies import company_data
from sandbox.services.jobs import read_job_scoped, world_of
from sandbox.utc import rfc3339, utcnow
from sandbox.vocabulary import JobStatus, new_id

MAX_AMOUNT = Decimal(10) ** 9
OUTCOMES = ("upheld", "rejected")


def _amount(value: Decimal | float | str, what: str) -> int:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise Invalid(f"{what} is not a number") from None
    if not number.is_finite() or number < 0 or number > MAX_AMOUNT:
        raise Invalid(f"{what} must be a number from 0 to {MAX_AMOUNT}")
    return protocol.cents(number)


def _text(value: str, what: str, longest: int) -> str:
    value = value.strip()
    if not value or len(value) > longest:
        raise Invalid(f"{what} must be 1 to {longest} characters")
    return value


# ------------------------------------------------------------------------------- vouchers
def issue_voucher(
    gov: Governance, actor: Any, company_id: str, amount: Decimal | float | str,
    valid_days: int, purpose: str,
) -> Voucher:  # fmt: skip
    """Issue a compute voucher to a company, as the written terms allow (decided, recorded)."""
    terms = gov.tiers.settlement
    cents = _amount(amount, "the voucher's amount")
    if cents <= 0:
        raise Invalid("a voucher's amount must be above zero")
    if not 1 <= valid_days <= 3650:
        raise Invalid("a voucher is valid for 1 to 3650 days")
    purpose = _text(purpose, "the voucher's purpose", 200)
    company, facts, _ = company_in_question(gov, company_id, actor)
    rows = sum(int((d.manifest or {}).get("train_rows") or 0)
               for d in company_store.datasets_of(gov.engine, company_id))  # fmt: skip
    done = job_store.query_jobs(gov.engine, None, company_id, JobStatus.COMPLETED, 0, 1)
    context = {
        "amount": cents,
        "max_amount": protocol.cents(terms.voucher_max),
        "small": rows < terms.small_company_rows,
        "first_time": not done,
    }
    decision = authorize(gov, actor, "issue_voucher", facts, context,
                         annotation=Annotation(resource_kind="company", resource_id=company_id,
                                               owner=company_id))  # fmt: skip
    if company is None:
        raise NotFound(f"no company {company_id!r}")
    voucher = store.add_voucher(gov.engine, Voucher(
        id=new_id("vch"), company_id=company_id, amount=cents, currency=terms.currency,
        purpose=purpose, valid_until=utcnow() + timedelta(days=valid_days),
        issued_by=actor.id, decision_id=decision.decision_id,
    ))  # fmt: skip
    gov.record(LedgerRecord(
        action="voucher.issued", actor=actor_of(actor),
        resource=Resource(kind="company", id=company_id, owner=company_id),
        details={"voucher": voucher.id, "amount_cents": cents, "currency": terms.currency,
                 "valid_until": voucher.valid_until.strftime("%Y-%m-%d"),
                 "decision": decision.decision_id},
    ))  # fmt: skip
    return voucher


@dataclass(frozen=True)
class VoucherBalance:
    voucher: Voucher
    used: int

    @property
    def left(self) -> int:
        return self.voucher.amount - self.used


def vouchers(gov: Governance, actor: Any, company_id: str) -> list[VoucherBalance]:
    """A company's vouchers and what is left of each (the company's own data)."""
    company_data(gov, actor, company_id, "vouchers")
    return _balances(gov, company_id, None)


def _balances(gov: Governance, company_id: str, except_job: str | None) -> list[VoucherBalance]:
    found = store.vouchers_of(gov.engine, company_id)
    taken = store.used(gov.engine, [v.id for v in found], except_job)
    return [VoucherBalance(v, taken[v.id]) for v in found]


# ----------------------------------------------------------------------------- statements
def _metering(receipts: list[Any]) -> dict[str, tuple[float, int, int]]:
    """Per company: CPU seconds, bytes in and out, and how many tasks were metered, from the
    signed receipts the coordinator verified and stored (version 4 receipts are metered)."""
    totals: dict[str, tuple[float, int, int]] = {}
    for receipt in receipts:
        metering = json.loads(receipt.payload).get("metering")
        cpu, moved, tasks = totals.get(receipt.company_id, (0.0, 0, 0))
        if isinstance(metering, dict):
            cpu += float(metering.get("cpu_seconds", 0.0))
            moved += int(metering.get("bytes_in", 0)) + int(metering.get("bytes_out", 0))
            tasks += 1
        totals[receipt.company_id] = (cpu, moved, tasks)
    return totals


def settle(gov: Governance, actor: Any, job_id: str, value: Decimal | float | str) -> Settlement:
    """Draw up, sign and store a completed job's settlement statement for the declared
    ``value`` (decided and recorded). A job has one statement; a new revision only after a
    contest of the current one was upheld."""
    job = job_store.get_job(gov.engine, job_id)
    if job.status != JobStatus.COMPLETED or not job.result:
        raise Conflict(f"job {job_id} is {job.status}: only a completed job is settled")
    contributions = (job.result or {}).get("contributions") or {}
    shares = {str(row["company"]): float(row["share"])
              for row in contributions.get("companies") or [] if row.get("share") is not None}  # fmt: skip
    if not shares:
        raise Conflict(f"job {job_id} has no contribution estimate to settle by")
    earlier = store.find_settlement(gov.engine, job_id)
    if earlier is not None and not any(
        d.status == "upheld" and d.revision == earlier.revision
        for d in store.disputes_of(gov.engine, job_id)
    ):
        raise Conflict(f"job {job_id} is settled (revision {earlier.revision}); a new revision "
                       "follows only an upheld contest")  # fmt: skip
    cents = _amount(value, "the declared value")
    world = world_of(gov, job)
    decision = authorize(gov, actor, "settle_job", world.job, entities=world.entities,
                         annotation=Annotation(job_id=job_id))  # fmt: skip
    terms = gov.tiers.settlement
    prices = {"cpu_hour": terms.cpu_hour, "gigabyte": terms.gigabyte, "task": terms.task}
    metered = _metering(job_store.receipts_of_job(gov.engine, job_id))
    amounts = protocol.apportion(cents, shares)
    lines, uses = [], []
    for company in sorted(shares):
        cpu, moved, tasks = metered.get(company, (0.0, 0, 0))
        cost = protocol.compute_cost(cpu, moved, tasks, prices)
        live = [b for b in _balances(gov, company, job_id)
                if b.left > 0 and b.voucher.valid_until > utcnow()]  # fmt: skip
        entry = protocol.line(company, shares[company], amounts[company], cpu, moved, tasks,
                              cost, sum(b.left for b in live))  # fmt: skip
        lines.append(entry)
        uses += _take(live, entry.vouchers, job_id)
    revision = 1 if earlier is None else earlier.revision + 1
    statement = protocol.Statement(
        job=job_id, revision=revision, currency=terms.currency, value=cents,
        method=str(contributions.get("method", "unknown")),
        prices={name: str(price) for name, price in prices.items()},
        companies=tuple(lines), settled_by=actor.id, time=rfc3339(utcnow()),
        coordinator=((job.result or {}).get("metering") or {}).get("coordinator"),
    )  # fmt: skip
    text, signature = protocol.sign_statement(
        identity.sandbox_key(gov.settings.keys_dir, "operator"), statement
    )
    stored = store.save_settlement(gov.engine, Settlement(
        job_id=job_id, revision=revision, statement=text, signature=signature,
        settled_by=actor.id,
    ), uses)  # fmt: skip
    gov.record(LedgerRecord(
        action="job.settled", actor=actor_of(actor), resource=Resource(kind="job", id=job_id),
        job_id=job_id,
        details={"revision": revision, "value_cents": cents, "currency": terms.currency,
                 "statement_sha256": hashlib.sha256(text.encode()).hexdigest(),
                 "decision": decision.decision_id},
    ))  # fmt: skip
    return stored


def _take(live: list[VoucherBalance], amount: int, job_id: str) -> list[VoucherUse]:
    uses = []
    for balance in live:
        if amount <= 0:
            break
        taken = min(amount, balance.left)
        uses.append(VoucherUse(voucher_id=balance.voucher.id, job_id=job_id, amount=taken))
        amount -= taken
    return uses


@dataclass(frozen=True)
class SettlementView:
    """A job's settlement as the reader may see it: the whole signed statement, or (for a
    company) its own line and the others' totals, with the statement's digest."""

    settlement: Settlement
    statement: dict[str, Any]
    complete: bool
    disputes: list[SettlementDispute]

    @property
    def statement_sha256(self) -> str:
        return hashlib.sha256(self.settlement.statement.encode()).hexdigest()


def settlement_of(gov: Governance, actor: Any, job_id: str) -> SettlementView:
    """A job's settlement statement, shaped by whose figures the reader may see."""
    _, scope = read_job_scoped(gov, actor, job_id, "settlement")
    settled = store.get_settlement(gov.engine, job_id)
    statement = json.loads(settled.statement)
    disputes = store.disputes_of(gov.engine, job_id)
    if not scope.hidden:
        return SettlementView(settled, statement, True, disputes)
    own = [c for c in statement["companies"] if c["company"] not in scope.hidden]
    others = [c for c in statement["companies"] if c["company"] in scope.hidden]
    statement["companies"] = own
    statement["others"] = {
        "companies": len(others),
        **{k: sum(c[k] for c in others) for k in ("amount", "compute_cost", "vouchers", "net")},
    }
    mine = [d for d in disputes if d.company_id not in scope.hidden]
    return SettlementView(settled, statement, False, mine)


def statement_csv(statement: dict[str, Any]) -> str:
    """The statement's table as CSV: one row per company (and the others' totals, if shown)."""
    out = io.StringIO()
    columns = ["company", "share", "amount", "cpu_seconds", "bytes", "compute_cost",
               "vouchers", "billed", "net"]  # fmt: skip
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["job", "revision", "currency", *columns])
    head = [statement["job"], statement["revision"], statement["currency"]]
    for row in statement["companies"]:
        writer.writerow([*head, *(row[c] for c in columns)])
    if "others" in statement:
        others = statement["others"]
        writer.writerow([*head, f"{others['companies']} other companies", "", others["amount"],
                         "", "", others["compute_cost"], others["vouchers"], "",
                         others["net"]])  # fmt: skip
    return out.getvalue()


# ------------------------------------------------------------------------------ disputes
def contest(gov: Governance, actor: Any, job_id: str, reason: str) -> SettlementDispute:
    """A company in the job contests the current statement (decided, recorded)."""
    reason = _text(reason, "the reason", 2000)
    settled = store.get_settlement(gov.engine, job_id)
    world = world_of(gov, job_store.get_job(gov.engine, job_id))
    decision = authorize(gov, actor, "contest_settlement", world.job, entities=world.entities,
                         annotation=Annotation(job_id=job_id))  # fmt: skip
    dispute = store.add_dispute(gov.engine, SettlementDispute(
        id=new_id("dsp"), job_id=job_id, company_id=actor.id, revision=settled.revision,
        reason=reason,
    ))  # fmt: skip
    gov.record(LedgerRecord(
        action="settlement.contested", actor=actor_of(actor),
        resource=Resource(kind="job", id=job_id), job_id=job_id,
        details={"dispute": dispute.id, "revision": settled.revision,
                 "reason_sha256": hashlib.sha256(reason.encode()).hexdigest(),
                 "decision": decision.decision_id},
    ))  # fmt: skip
    return dispute


def resolve(gov: Governance, actor: Any, job_id: str, dispute_id: str, outcome: str,
            note: str) -> SettlementDispute:  # fmt: skip
    """Resolve an open contest: upheld (a new revision may follow) or rejected."""
    if outcome not in OUTCOMES:
        raise Invalid(f"the outcome is one of {', '.join(OUTCOMES)}")
    note = _text(note, "the note", 2000)
    found = [d for d in store.disputes_of(gov.engine, job_id) if d.id == dispute_id]
    if not found:
        raise NotFound(f"job {job_id} has no dispute {dispute_id!r}")
    if found[0].status != "open":
        raise Conflict(f"dispute {dispute_id} was {found[0].status} already")
    world = world_of(gov, job_store.get_job(gov.engine, job_id))
    decision = authorize(gov, actor, "resolve_dispute", world.job, entities=world.entities,
                         annotation=Annotation(job_id=job_id))  # fmt: skip
    resolved = store.resolve_dispute(gov.engine, dispute_id, outcome, note, actor.id, utcnow())
    gov.record(LedgerRecord(
        action="settlement.dispute_resolved", actor=actor_of(actor),
        resource=Resource(kind="job", id=job_id), job_id=job_id,
        details={"dispute": dispute_id, "outcome": outcome,
                 "note_sha256": hashlib.sha256(note.encode()).hexdigest(),
                 "decision": decision.decision_id},
    ))  # fmt: skip
    return resolved
