"""The record schema: strict, versioned, canonical, and with no room for personal data."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sandbox.canonical import canonical_json
from sandbox.ledger import Actor, DecisionRef, LedgerRecord, Privacy, Purpose, RecordError, Resource
from sandbox.ledger.records import canonical_entry, parse_record
from tests.ledger.helpers import BASE_TIME, digest, make_record, make_round_record


def test_canonical_entry_is_rfc8785_and_round_trips() -> None:
    record = make_round_record(3, ["acme-bank", "zeta-health"])
    entry = canonical_entry(record)
    assert entry == rfc8785.dumps(json.loads(entry))
    assert parse_record(entry) == record
    assert canonical_entry(parse_record(entry)) == entry


def test_entry_omits_absent_fields_and_writes_time_in_utc() -> None:
    local = timezone(timedelta(hours=8))
    record = LedgerRecord(
        record_id="r1",
        time=datetime(2025, 3, 1, 20, 0, tzinfo=local),
        action="consent.grant",
        actor=Actor(principal="company:acme-bank", role="company", organisation="acme-bank"),
    )
    document = json.loads(canonical_entry(record))
    assert document["time"] == "2025-03-01T12:00:00.000000Z"
    assert document["schema_version"] == 1
    assert set(document) == {"action", "actor", "record_id", "schema_version", "time"}


def test_record_ids_are_generated_and_unique() -> None:
    actor = Actor(principal="operator", role="operator")
    ids = {LedgerRecord(action="ledger.test", actor=actor).record_id for _ in range(50)}
    assert len(ids) == 50


@pytest.mark.parametrize(
    "change",
    [
        {"unknown_field": 1},
        {"action": "Job Admit"},
        {"action": "job.admit; drop table"},
        {"schema_version": 2},
        {"time": datetime(2025, 1, 1)},  # naive: ambiguous
        {"time": "2025-01-01T00:00:00Z"},  # strict: a datetime, not text
        {"job_id": "Jane Doe"},  # ids have no spaces: no names or sentences
        {"job_id": "x" * 129},
        {"correlation_id": ""},
        {"round": -1},
        {"round": 2**53},
        {"round": True},
        {"model_hash": "ABC"},
        {"participants": []},
        {"participants": ["acme-bank", "acme-bank"]},
        {"participants": [f"c{i}" for i in range(257)]},
        {"details": {"note": "called the customer at home"}},
        {"details": {"Name": "x"}},
        {"details": {f"k{i}": i for i in range(17)}},
        {"details": {"ids": [f"id{i}" for i in range(65)]}},
        {"details": {"nested": {"a": 1}}},
        {"details": {"ratio": float("nan")}},
        {"details": {"big": 2**60}},
    ],
    ids=repr,
)
def test_schema_refuses(change: dict) -> None:
    fields = make_record(1).model_dump() | change
    with pytest.raises(ValidationError):
        LedgerRecord(**fields)


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (Actor, {"principal": "alice", "role": "hacker"}),
        (Actor, {"principal": "alice", "role": "engineer", "email": "a@b"}),
        (Resource, {"kind": "dataset", "id": "d1", "grade": "secret"}),
        (Resource, {"kind": "dataset", "id": "d1", "content_hash": "00" * 31}),
        (Purpose, {"name": "credit-risk", "legal_basis": "consent"}),  # which consent?
        (DecisionRef, {"decision_id": "d", "allowed": 1, "policy_set_hash": "0" * 64}),
        (
            DecisionRef,
            {
                "decision_id": "d",
                "allowed": True,
                "policy_set_hash": "0" * 64,
                "policies": ["p", "p"],
            },
        ),
        (Privacy, {"epsilon": -1.0}),
        (Privacy, {"delta": 1.0}),
        (Privacy, {"epsilon_spent": float("inf")}),
    ],
    ids=repr,
)
def test_nested_parts_are_strict(model: type, fields: dict) -> None:
    with pytest.raises(ValidationError):
        model(**fields)


def test_records_are_frozen() -> None:
    record = make_record(1)
    with pytest.raises(ValidationError):
        record.action = "job.cancel"  # type: ignore[misc]


def test_a_list_mutated_after_validation_is_caught_before_storing() -> None:
    record = make_round_record(1, ["acme-bank"])
    assert record.participants is not None
    record.participants.append("acme-bank")  # a repeat the validator would have refused
    with pytest.raises(RecordError):
        canonical_entry(record)


def test_details_take_small_values_and_id_lists() -> None:
    details = {"rows": 10, "ratio": 0.25, "ok": False, "dataset": "acme-bank/loans",
               "ids": ["a", "b"], "none": None}  # fmt: skip
    record = make_record(1, details=details)
    assert parse_record(canonical_entry(record)).details == details


def test_parse_record_refuses_foreign_bytes() -> None:
    with pytest.raises(RecordError):
        parse_record(b"[1, 2]")
    with pytest.raises(RecordError):
        parse_record(b'{"schema_version": 9}')
    entry = json.loads(canonical_entry(make_record(1)))
    entry["extra"] = "x"
    with pytest.raises(RecordError):
        parse_record(rfc8785.dumps(entry))


def test_decision_record_helper() -> None:
    record = LedgerRecord.decision_record(
        action="job.admit",
        actor=Actor(principal="engineer:e1", role="engineer", organisation="lab"),
        decision=DecisionRef(
            decision_id="d1",
            allowed=False,
            policy_set_hash=digest("p"),
            reasons=["missing-consent"],
        ),
        time=BASE_TIME,
    )
    assert record.decision is not None and record.decision.allowed is False


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.integers(2**53, 2**60)  # beyond I-JSON: the package refuses, and so must we
    | st.sampled_from([2**53 - 1, -(2**53) + 1, 10**15, 10**15 - 1, 0.0, -0.0, 1e21, 1e-7])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.text(alphabet="abcXYZ019._:/=+-", max_size=12)
)
_json_documents = st.dictionaries(
    st.text(max_size=6),
    st.recursive(
        _json_scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=6), children, max_size=4)
        ),
        max_leaves=12,
    ),
    max_size=6,
)


@settings(max_examples=250)
@given(_json_documents)
def test_canonical_json_is_rfc8785(document: dict) -> None:
    try:
        expected = rfc8785.dumps(document)
    except rfc8785.CanonicalizationError:
        with pytest.raises(rfc8785.CanonicalizationError):
            canonical_json(document)
        return
    assert canonical_json(document) == expected


@given(st.integers(0, 10_000), st.booleans())
def test_records_canonicalise_like_rfc8785(number: int, with_privacy: bool) -> None:
    record = make_round_record(number, ["acme-bank"]) if with_privacy else make_record(number)
    entry = canonical_entry(record)
    assert entry == rfc8785.dumps(json.loads(entry))


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ('{"a":1}', True),
        ('{"a":1.0}', False),  # RFC 8785 prints 1
        ('{"b":1,"a":2}', False),  # keys unsorted
        ('{"a": 1}', False),  # whitespace
        ('{"a":"\\u00e9"}', False),  # escaped where RFC 8785 keeps the character
        ('{"a":"é"}', True),
        ('{"a":5e-07}', False),  # ECMAScript prints 5e-7
        ('{"a":5e-7}', True),
        ('{"a":1e+21}', True),
        ('{"a":12345678901234567}', False),  # beyond I-JSON's exact integers: printed as float
        ("[1]", False),  # an entry is an object
        ("not json", False),
    ],
)
def test_is_canonical_knows_rfc_8785(text: str, canonical: bool) -> None:
    from sandbox.ledger.records import is_canonical

    assert is_canonical(text.encode("utf-8")) is canonical
