"""The release inventory as the node's last check: replies shaped as the gate lets them out
and as SecAgg+ puts them on the wire pass; anything else is named."""

from __future__ import annotations

from typing import Any

import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from clients.inventory import allowed_tasks, check_outgoing, check_wire, describe

DP_METRICS = ["delta", "epsilon", "epsilon-job", "noise-multiplier", "num-examples",
              "sample-rate", "steps"]  # fmt: skip


def secure_train_reply(**overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A DP + SecAgg+ train reply as captured at the node's edge."""
    flat = [f"metrics.{m}" for m in DP_METRICS] + ["receipt.payload", "receipt.signature"]
    wire = {
        "fitres.metrics": {"kind": "ConfigRecord", "fields": flat},
        "fitres.num_examples": {"kind": "MetricRecord", "fields": ["num_examples"]},
        "fitres.parameters": {"kind": "ArrayRecord", "fields": []},
        "fitres.status": {"kind": "ConfigRecord", "fields": ["code", "message"]},
        "secaggplus_configs": {"kind": "ConfigRecord", "fields": ["masked_params"]},
    }
    return wire | overrides


def test_a_secure_dp_train_reply_passes() -> None:
    assert check_wire("train", secure_train_reply(), dp=True, secure=True) == []
    stage = {"secaggplus_configs": {"kind": "ConfigRecord", "fields": ["pk1", "pk2"]}}
    assert check_wire("train", stage, dp=True, secure=True) == []


@pytest.mark.parametrize(
    ("overrides", "found"),
    [
        ({"fitres.parameters": {"kind": "ArrayRecord", "fields": ["0"]}}, "left unmasked"),
        (
            {"fitres.metrics": {"kind": "ConfigRecord", "fields": ["metrics.loss"]}},
            "metrics.loss of task 'train'",
        ),
        (
            {"fitres.metrics": {"kind": "ConfigRecord", "fields": ["stats.sum/age"]}},
            "record 'stats' is not in the release inventory",
        ),
        ({"fitres.extra": {"kind": "ConfigRecord", "fields": []}}, "not a FitRes part"),
        (
            {"secaggplus_configs": {"kind": "ConfigRecord", "fields": ["params"]}},
            "secaggplus_configs.params",
        ),
        ({"fitres.status": {"kind": "ConfigRecord", "fields": ["code", "rows"]}}, "status"),
    ],
)
def test_a_bent_secure_reply_is_named(overrides: dict[str, Any], found: str) -> None:
    problems = check_wire("train", secure_train_reply(**overrides), dp=True, secure=True)
    assert any(found in p for p in problems), problems


def test_a_legacy_reply_outside_secagg_is_refused() -> None:
    problems = check_wire("train", secure_train_reply(), dp=True, secure=False)
    assert any("only through SecAgg+" in p for p in problems), problems


def test_under_dp_no_exact_training_statistic_leaves() -> None:
    assert "feature-stats" not in allowed_tasks(dp=True, secure=True)
    stats = RecordDict({"stats": MetricRecord({"rows": 10, "sum/age": 400.0})})
    assert check_outgoing("feature-stats", stats, dp=True, secure=True)
    assert check_outgoing("feature-stats", stats, dp=False, secure=False) == []
    loss = RecordDict({"metrics": MetricRecord({"num-examples": 10, "loss": 0.3})})
    assert check_outgoing("train", loss, dp=True, secure=False)
    assert check_outgoing("train", loss, dp=False, secure=False) == []


def test_describe_is_what_check_outgoing_checks() -> None:
    content = RecordDict(
        {
            "arrays": ArrayRecord(),
            "metrics": MetricRecord({"num-examples": 3}),
            "receipt": ConfigRecord({"payload": "{}", "signature": "x"}),
        }
    )
    shape = describe(content)
    assert shape["metrics"] == {"kind": "MetricRecord", "fields": ["num-examples"]}
    assert check_wire("train", shape, dp=False, secure=False) == check_outgoing(
        "train", content, dp=False, secure=False
    )
    shape["receipt"]["kind"] = "MetricRecord"
    assert any("signed statement" in p for p in check_wire("train", shape, False, False))


def test_the_witness_answer_leaves_as_a_statement_with_evaluations_only() -> None:
    answer = {"witness": {"kind": "ConfigRecord", "fields": ["body", "status"]}}
    evaluation = {"metrics": {"kind": "MetricRecord", "fields": ["auc", "num-examples"]}}
    assert check_wire("evaluate", evaluation | answer, dp=True, secure=True) == []
    answer["witness"]["kind"] = "MetricRecord"
    assert check_wire("evaluate", evaluation | answer, dp=True, secure=True)
