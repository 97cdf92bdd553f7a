"""A job's receipts checked offline against its warrant: the honest set holds, and every
way of bending one (a byte changed, another job's warrant, a dataset or purpose the warrant
does not name, an epsilon above the warrant's, totals that go down, a swapped key) is found."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sandbox import identity
from sandbox.protocol.job_receipts import JobReceipts, check_job_receipts, receipts_document
from sandbox.protocol.jobspec import JobSpec
from sandbox.protocol.receipts import ReceiptError, ReceiptPayload, sign_receipt
from sandbox.protocol.warrant import Warrant, WarrantDataset, WarrantRules

OPERATOR = identity.generate_key()
REGULATOR = identity.generate_key()
COMPANIES = {"acme": identity.generate_key(), "bolt": identity.generate_key()}
JOB = "job-0123456789ab"
SPEC = JobSpec.model_validate(
    {
        "purpose": "income-prediction",
        "companies": sorted(COMPANIES),
        "privacy": {"secure_aggregation": True, "dp": {"epsilon": 3.0}},
        "rounds": 2,
    }
)


def warrant(job: str = JOB) -> Warrant:
    return Warrant(
        job_id=job,
        engineer="eng",
        spec=SPEC.model_dump(mode="json"),
        spec_hash=SPEC.spec_hash,
        code_bundle="a" * 64,
        tier="high",
        rules=WarrantRules(
            requires_dp=True, requires_secure_aggregation=True, dp_epsilon_cap=3.0,
            min_participants=2,
        ),
        policy_set="b" * 64,
        admission_index=7,
        datasets=tuple(
            WarrantDataset(company=c, dataset=f"{c}/census", industry="Retail trade",
                           grade="general", personal_data=True)
            for c in sorted(COMPANIES)
        ),
        issued_at="2026-12-07T00:00:00Z",
    ).signed(OPERATOR)  # fmt: skip


def receipt(company: str, index: int, epsilon_job: float, **changes: Any) -> tuple[str, str, str]:
    fields: dict[str, Any] = {
        "company": company,
        "dataset": f"{company}/census",
        "dataset_hash": "c" * 64,
        "job": JOB,
        "round": index,
        "task": "train" if index else "local-baseline",
        "purpose": "income-prediction",
        "consent": "consent-0123456789ab",
        "plan": "d" * 64,
        "warrant": warrant().digest(),
        "rows": 100,
        "epsilon": 1.0,
        "delta": 1e-5,
        "epsilon_job": epsilon_job,
        "epsilon_purpose": epsilon_job,
        "epsilon_dataset": epsilon_job,
        "time": "2026-12-07T00:00:01Z",
        "log_index": index,
        "log_hash": "e" * 64,
    }
    payload, signature = sign_receipt(COMPANIES[company], ReceiptPayload(**(fields | changes)))
    return company, payload, signature


def document(*extra: tuple[str, str, str], warrant_text: str | None = None) -> JobReceipts:
    honest = [receipt(c, i, 1.0 + i) for c in sorted(COMPANIES) for i in range(3)]
    return receipts_document(
        warrant_text or warrant().text(),
        {c: identity.public_b64(k) for c, k in COMPANIES.items()},
        honest + list(extra),
    )


def check(doc: JobReceipts) -> list[str]:
    result = check_job_receipts(doc, identity.public_b64(OPERATOR), identity.public_b64(REGULATOR))
    return result.problems


def test_the_honest_receipts_hold_and_travel_as_json() -> None:
    doc = JobReceipts.parse(document().model_dump_json())
    result = check_job_receipts(doc, identity.public_b64(OPERATOR), identity.public_b64(REGULATOR))
    assert result.ok and result.receipts == 6
    assert result.epsilon_job == {"acme": 3.0, "bolt": 3.0}


@pytest.mark.parametrize(
    ("bent", "found"),
    [
        (receipt("acme", 5, 3.0, warrant="f" * 64), "does not name this job's warrant"),
        (receipt("acme", 5, 3.0, dataset="acme/other"), "not the warrant's"),
        (receipt("acme", 5, 3.0, purpose="marketing"), "purpose 'marketing'"),
        (receipt("acme", 5, 3.4), "above the warrant's 3.0"),
        (receipt("acme", 5, 2.5), "goes down from 3.0 to 2.5"),
        (receipt("acme", 2, 3.0), "two receipts at log index 2"),
        (receipt("acme", 5, 3.0, job="job-ba9876543210"), "names job"),
    ],
)
def test_a_bent_receipt_is_found(bent: tuple[str, str, str], found: str) -> None:
    problems = check(document(bent))
    assert any(found in p for p in problems), problems


def test_a_changed_byte_or_a_swapped_key_fails_the_signature() -> None:
    company, payload, signature = receipt("bolt", 5, 3.0)
    changed = check(document((company, payload.replace('"rows":100', '"rows":101'), signature)))
    assert any("signature is not bolt's" in p for p in changed), changed
    doc = document()
    keys = dict(doc.companies)
    keys["acme"], keys["bolt"] = keys["bolt"], keys["acme"]
    swapped = check(doc.model_copy(update={"companies": keys}))
    assert sum("signature is not" in p for p in swapped) == 6


def test_the_warrant_must_be_the_operators_and_this_jobs() -> None:
    forged = warrant().model_copy(update={"signature": ""}).signed(identity.generate_key())
    assert any(
        "not signed by the operator" in p for p in check(document(warrant_text=forged.text()))
    )
    other = warrant("job-ba9876543210").text()
    assert any("job-ba9876543210" in p for p in check(document(warrant_text=other)))


@pytest.mark.parametrize("text", ["", "[]", '{"type": "other"}', json.dumps({"type": "x" * 5})])
def test_a_malformed_document_is_refused_clearly(text: str) -> None:
    with pytest.raises(ReceiptError, match="not a receipts document"):
        JobReceipts.parse(text)


def test_receipts_of_each_version_keep_their_own_canonical_form() -> None:
    """A version 3 receipt names the ledger checkpoint its node cosigned; version 2 receipts
    (signed before) verify unchanged, and a version 2 receipt cannot smuggle the field."""
    _, v3_text, _ = receipt("acme", 1, 2.0, ledger="12 " + "A" * 43 + "=", version=3)
    assert '"ledger":"12 ' in v3_text and '"version":3' in v3_text
    company, v2_text, v2_sig = receipt("acme", 7, 3.0, version=2)
    assert '"ledger"' not in v2_text and '"version":2' in v2_text
    assert check(document((company, v2_text, v2_sig))) == []
    tampered = v2_text.replace('"version":2', '"version":3')
    assert any(
        "signature" in p or "canonical" in p for p in check(document((company, tampered, v2_sig)))
    )
