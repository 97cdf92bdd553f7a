"""A job's compliance report: the record of processing, each company's data use and privacy
spent, every policy decision, the release assessment, each line with the ledger index that
records it and the signed checkpoint (tree size) that covers that index.

Built on :func:`sandbox.reports.compliance.job_summary`; rendered as one self-contained HTML
file (plots inlined as SVG, no external resource) and as JSON with the same facts. A checkpoint
is signed when the report is built, so every index it cites is covered.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, Field

from sandbox.errors import NotFound
from sandbox.governance import Governance
from sandbox.identity import public_b64
from sandbox.registry import companies as company_store
from sandbox.registry import jobs as job_store
from sandbox.registry import settlements as settlement_store
from sandbox.reports import plots
from sandbox.reports.compliance import (
    ComplianceSummary,
    _decision_notes,
    _job_entries,
    job_summary,
)
from sandbox.reports.release_line import OUTCOME_WORDS, ReleaseLine, release_line
from sandbox.utc import utcnow

TEMPLATES = Path(__file__).parent / "templates"


class CheckpointRef(BaseModel):
    size: int
    root: str
    note: str = Field(description="the C2SP signed note; verify it with the log's public key")
    signed_at: datetime | None


class Fact(BaseModel):
    """One statement of the report and where the ledger proves it."""

    section: str
    statement: str
    ledger_index: int
    checkpoint_size: int = Field(description="the signed checkpoint whose tree covers the entry")


class DatasetUse(BaseModel):
    company: str
    dataset: str
    industry: str
    grade: str
    personal_data: bool
    rows: int
    content_hash: str
    features: list[str] = Field(description="column names and kinds from the manifest; no rows")


class ProcessingRecord(BaseModel):
    """A record of processing, after GDPR art. 30 / PIPL art. 55: what, why, whose, to whom,
    under which safeguards, kept how long."""

    controller: str
    purposes: list[str]
    legal_basis: str
    data_categories: list[DatasetUse]
    participants: list[str]
    recipients: list[str]
    safeguards: dict[str, Any]
    retention: list[str]


class CompanyLine(BaseModel):
    company: str
    receipts: int
    rows: int
    epsilon: float
    epsilon_receipted: float
    epsilon_budget: float | None
    ledger_indices: list[int]


class DecisionLine(BaseModel):
    ledger_index: int
    checkpoint_size: int
    action: str
    principal: str
    allowed: bool
    policies: list[str]
    reasons: list[str]
    decision_id: str
    round: int | None


class RoundLine(BaseModel):
    number: int
    status: str
    took_part: list[str]
    missing: list[str]
    rejected: list[str]
    mean_auc: float | None
    epsilon: dict[str, float] = Field(description="epsilon each company spent in this round")
    ledger_index: int | None
    checkpoint_size: int | None


class SettlementPart(BaseModel):
    """The job's current settlement statement (amounts in cents), as signed."""

    revision: int
    statement: dict[str, Any]
    signature: str
    statement_sha256: str


class ComplianceReport(BaseModel):
    generated_at: datetime
    job_id: str
    purpose: str
    status: str
    risk_tier: str
    spec_hash: str
    filed_by: str
    filed_at: datetime
    model_hash: str | None
    log_origin: str
    public_key: str = Field(description="the log's Ed25519 public key, base64")
    verifier_key: str
    checkpoints: list[CheckpointRef]
    processing: ProcessingRecord
    companies: list[CompanyLine]
    rounds: list[RoundLine]
    decisions: list[DecisionLine]
    release: ReleaseLine | None
    utility: dict[str, dict[str, float | None]] = Field(
        description="per company: AUC of its local-only model and of the federated model"
    )
    facts: list[Fact]
    summary: ComplianceSummary
    settlement: SettlementPart | None = None


def _covering(sizes: list[int], index: int) -> int:
    """The size of the first signed checkpoint whose tree holds entry ``index``."""
    at = bisect_right(sizes, index)
    if at == len(sizes):
        raise NotFound(f"no signed checkpoint covers ledger entry {index}")
    return sizes[at]


def _features(manifest: dict[str, Any]) -> list[str]:
    return [f"{f.get('name')} ({f.get('kind')})" for f in manifest.get("features", [])]


def build_report(
    gov: Governance, job_id: str, summary: ComplianceSummary | None = None
) -> ComplianceReport:
    """The report of ``job_id`` as the registry and the ledger hold it now (no policy check:
    call :func:`sandbox.services.audit.compliance_report`, which decides and records the read).
    ``summary``: the job's compliance summary when the caller has read it already."""
    summary = summary or job_summary(gov, job_id)
    job = job_store.get_job(gov.engine, job_id)
    spec = job_store.job_spec(job)
    gov.ledger.checkpoint()  # so that every index cited below is covered by a signed tree
    signed = gov.ledger.checkpoints()
    sizes = [c.size for c in signed]

    def cover(index: int | None) -> int | None:
        return None if index is None else _covering(sizes, index)

    entries, _ = _job_entries(gov, job_id, 20_000)
    decided = [e for e in entries if e.record.decision is not None]
    notes = _decision_notes(gov, [e.record.decision.decision_id for e in decided])
    decisions = [
        DecisionLine(
            ledger_index=e.index,
            checkpoint_size=_covering(sizes, e.index),
            action=e.record.action.removeprefix("decision."),
            principal=e.record.actor.principal,
            allowed=e.record.decision.allowed,
            policies=list(e.record.decision.policies),
            reasons=list(notes[e.record.decision.decision_id].reasons)
            if e.record.decision.decision_id in notes
            else [],
            decision_id=e.record.decision.decision_id,
            round=e.record.round,
        )
        for e in decided
    ]

    datasets = []
    for company in summary.participants:
        try:
            d = company_store.get_dataset(gov.engine, company, spec.dataset)
        except NotFound:
            continue
        datasets.append(
            DatasetUse(
                company=company,
                dataset=d.name,
                industry=d.industry,
                grade=d.grade,
                personal_data=d.personal_data,
                rows=d.row_count,
                content_hash=d.content_hash,
                features=_features(d.manifest),
            )
        )
    releases = job_store.releases_of(gov.engine, job_id)
    dp = spec.privacy.dp
    recipients = [f"engineer {job.filed_by} (filed the job; receives the trained model)"]
    if any(r.allowed and r.exported_to for r in releases):
        recipients.append("the release folder of the sandbox (the model and its model card)")
    recipients.append("regulators (the audit ledger and this report)")
    processing = ProcessingRecord(
        controller="the sandbox operator, on behalf of the participating companies",
        purposes=[spec.purpose],
        legal_basis="consent (each company's live consent of its dataset to the purpose)",
        data_categories=datasets,
        participants=list(summary.participants),
        recipients=recipients,
        safeguards={
            "federated_learning": "rows stay in each company's vault; only model updates, "
            "aggregate metrics and signed receipts leave a company",
            "differential_privacy": dp.model_dump(mode="json") if dp else None,
            "secure_aggregation": spec.privacy.secure_aggregation,
            "max_update_norm": spec.privacy.max_update_norm,
            "min_participants": spec.min_participants,
            "strategy": spec.strategy.name,
            "risk_tier": job.risk_tier,
            "regulator_approval": summary.approval_required,
        },
        retention=[
            "Rows: never leave the companies' vaults; nothing of them is kept by the sandbox.",
            "Model updates: used for aggregation in their round; only the aggregate is kept.",
            "Decisions, receipts and round records: kept in the append-only audit ledger.",
            "Consent: until each company's consent expires or is revoked; revocation removes "
            "the company from the next round.",
        ],
    )

    round_eps: dict[int, dict[str, float]] = {}
    for receipt in job_store.receipts_of_job(gov.engine, job_id):
        if receipt.epsilon is not None:
            per = round_eps.setdefault(receipt.round, {})
            per[receipt.company_id] = per.get(receipt.company_id, 0.0) + receipt.epsilon
    rounds = [
        RoundLine(
            **r.model_dump(exclude={"ledger_index"}),
            epsilon=round_eps.get(r.number, {}),
            ledger_index=r.ledger_index,
            checkpoint_size=cover(r.ledger_index),
        )
        for r in summary.rounds
    ]
    companies = [
        CompanyLine(
            company=name,
            receipts=use.receipts,
            rows=use.rows,
            epsilon=use.epsilon,
            epsilon_receipted=use.epsilon_receipted,
            epsilon_budget=dp.epsilon if dp else None,
            ledger_indices=use.ledger_indices,
        )
        for name, use in sorted(summary.companies.items())
    ]
    release = None
    if releases:
        verdicts = sorted(
            summary.ledger.by_action.get("model.released", [])
            + summary.ledger.by_action.get("model.withheld", [])
        )
        index = verdicts[-1] if verdicts else None
        release = release_line(releases[-1], index, cover(index))
    utility: dict[str, dict[str, float | None]] = {}
    for name, metrics in ((job.result or {}).get("companies") or {}).items():
        utility[name] = {
            "local-only": (metrics.get("local") or {}).get("auc"),
            "federated": (metrics.get("federated") or {}).get("auc"),
        }

    facts: list[Fact] = []

    def fact(section: str, statement: str, index: int | None) -> None:
        if index is not None:
            facts.append(Fact(section=section, statement=statement, ledger_index=index,
                              checkpoint_size=_covering(sizes, index)))  # fmt: skip

    fact("filing", f"Job {job.id} was filed by {job.filed_by} with spec hash {job.spec_hash}.",
         summary.filed_index)  # fmt: skip
    if summary.admission:
        a = summary.admission
        fact("admission", f"Admission {'allowed' if a.allowed else 'denied'} by "
             f"{', '.join(a.policies) or 'policy'}.", a.ledger_index)  # fmt: skip
    if summary.approval:
        a = summary.approval
        fact("approval", f"Regulator {a.principal} decided on approval: "
             f"{'allowed' if a.allowed else 'denied'}.", a.ledger_index)  # fmt: skip
    for index in summary.started_indices:
        fact("run", "The job's run was started.", index)
    for r in rounds:
        fact("rounds", f"Round {r.number} {r.status}: {len(r.took_part)} companies took part"
             + (f", missing {', '.join(r.missing)}" if r.missing else "")
             + (f", rejected {', '.join(r.rejected)}" if r.rejected else "") + ".",
             r.ledger_index)  # fmt: skip
    for c in companies:
        for index in c.ledger_indices:
            fact("data use", f"A receipt signed by {c.company} was recorded.", index)
    fact("model", f"Model trained, hash {summary.model_hash}.", summary.model_index)
    if release is not None:
        fact("release", f"Release {OUTCOME_WORDS.get(release.outcome, release.outcome)} "
             f"({release.tier} tier).", release.ledger_index)  # fmt: skip
    for e in entries:
        said = _settlement_fact(e.record)
        if said:
            fact("settlement", said, e.index)
    for line in decisions:
        fact("decisions", f"{line.principal}: {line.action} "
             f"{'allowed' if line.allowed else 'denied'}.", line.ledger_index)  # fmt: skip

    cited = {f.checkpoint_size for f in facts} | {sizes[-1]} if sizes else set()
    return ComplianceReport(
        generated_at=utcnow(),
        job_id=job.id,
        purpose=job.purpose,
        status=job.status,
        risk_tier=job.risk_tier,
        spec_hash=job.spec_hash,
        filed_by=job.filed_by,
        filed_at=job.filed_at,
        model_hash=job.model_hash,
        log_origin=gov.ledger.origin,
        public_key=public_b64(gov.ledger.public_key),
        verifier_key=gov.ledger.verifier_key,
        checkpoints=[
            CheckpointRef(size=c.size, root=c.root.hex(), note=c.note, signed_at=c.signed_at)
            for c in signed
            if c.size in cited
        ],
        processing=processing,
        companies=companies,
        rounds=rounds,
        decisions=decisions,
        release=release,
        utility=utility,
        facts=facts,
        summary=summary,
        settlement=_settlement(gov, job_id),
    )


def _settlement(gov: Governance, job_id: str) -> SettlementPart | None:
    settled = settlement_store.find_settlement(gov.engine, job_id)
    if settled is None:
        return None
    return SettlementPart(
        revision=settled.revision, statement=json.loads(settled.statement),
        signature=settled.signature,
        statement_sha256=hashlib.sha256(settled.statement.encode()).hexdigest(),
    )  # fmt: skip


def _settlement_fact(record: Any) -> str | None:
    """The statement of a settlement entry of the ledger, for the report."""
    details = record.details or {}
    if record.action == "job.settled":
        return (f"Settlement revision {details.get('revision')} drawn up by "
                f"{record.actor.principal}: value {int(details.get('value_cents', 0)) / 100:.2f} "
                f"{details.get('currency')}, statement SHA-256 {details.get('statement_sha256')}.")  # fmt: skip
    if record.action == "settlement.contested":
        return (f"{record.actor.principal} contested settlement revision "
                f"{details.get('revision')} ({details.get('dispute')}).")  # fmt: skip
    if record.action == "settlement.dispute_resolved":
        return (f"Contest {details.get('dispute')} {details.get('outcome')} by "
                f"{record.actor.principal}.")  # fmt: skip
    return None


def report_plots(report: ComplianceReport) -> dict[str, Any]:
    """The report's three plots as inline SVG (shared with the console's job page)."""
    return {
        "metric": plots.line_chart(
            [(r.number, r.mean_auc) for r in report.rounds],
            title="Mean AUC of the federated model per round",
            x_label="round",
            y_label="mean AUC",
            y_max=1.0,
        ),
        "utility": plots.grouped_bars(
            report.utility,
            ["local-only", "federated"],
            title="AUC per company: local-only vs federated",
            y_label="AUC",
            y_max=1.0,
        ),
        "privacy": plots.bars(
            {c.company: c.epsilon for c in report.companies},
            title="Privacy budget spent per company (epsilon)",
            y_label="epsilon",
        ),
    }


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), trim_blocks=True
    )
    env.filters["utc"] = lambda v: v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if v else ""
    env.filters["num"] = lambda v, d=3: "–" if v is None else f"{v:.{d}f}"
    env.globals["outcome_words"] = OUTCOME_WORDS
    return env


def render_html(report: ComplianceReport) -> str:
    """The report as one self-contained HTML document (prints cleanly)."""
    return (
        _environment().get_template("report.html").render(report=report, plots=report_plots(report))
    )


def render_json(report: ComplianceReport) -> str:
    return json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


def write_report(report: ComplianceReport, out_dir: Path) -> tuple[Path, Path]:
    """Write ``compliance-<job>.html`` and ``compliance-<job>.json`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    html = out_dir / f"compliance-{report.job_id}.html"
    data = out_dir / f"compliance-{report.job_id}.json"
    html.write_text(render_html(report), encoding="utf-8")
    data.write_text(render_json(report), encoding="utf-8")
    return html, data
