"""The coordinator's allow-list for replies: only model arrays, scalar metrics and signed
statements get through."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from sandbox.protocol.messages import (
    TASK_ASSESS,
    TASK_EVALUATE,
    TASK_EVALUATE_MODELS,
    TASK_IDENTIFY,
    TASK_STATS,
    TASK_TRAIN,
    check_reply,
    stack_models,
    to_array_record,
    unstack_models,
)

SHAPES = {"0.weight": (1, 4), "0.bias": (1,)}


def update(**overrides: np.ndarray) -> ArrayRecord:
    weights = {"0.weight": np.zeros((1, 4), np.float32), "0.bias": np.zeros(1, np.float32)}
    weights.update(overrides)
    return to_array_record(weights)


def train_reply(arrays: ArrayRecord | None = None, **extra) -> RecordDict:  # type: ignore[no-untyped-def]
    content = {
        "arrays": arrays if arrays is not None else update(),
        "metrics": MetricRecord({"num-examples": 10.0, "loss": 0.3, "steps": 2.0}),
    }
    content.update(extra)
    return RecordDict(content)


def test_a_proper_train_reply_passes() -> None:
    assert check_reply(TASK_TRAIN, train_reply(), SHAPES) == []


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        (update(**{"0.weight": np.zeros((2, 4), np.float32)}), "has shape (2, 4), expected (1, 4)"),
        (update(**{"0.weight": np.full((1, 4), np.nan, np.float32)}), "NaN or infinite"),
        (update(**{"0.bias": np.zeros(1, np.float64)}), "dtype float64, expected float32"),
        (
            ArrayRecord({"rows": Array(np.zeros((100, 4), np.float32))}),
            "update names arrays ['rows']",
        ),
    ],
)
def test_bad_updates_are_refused(arrays: ArrayRecord, expected: str) -> None:
    problems = check_reply(TASK_TRAIN, train_reply(arrays), SHAPES)
    assert any(expected in p for p in problems), problems


def test_extra_records_and_metrics_are_refused() -> None:
    smuggled = train_reply(rows=ConfigRecord({"row-1": "age=41,income=..."}))
    assert any(
        "unexpected records ['rows']" in p for p in check_reply(TASK_TRAIN, smuggled, SHAPES)
    )
    listy = RecordDict({"metrics": MetricRecord({"num-examples": 3.0, "auc": [0.1, 0.2, 0.3]})})
    assert any("must be one number" in p for p in check_reply(TASK_EVALUATE, listy))
    unknown = RecordDict({"metrics": MetricRecord({"num-examples": 3.0, "age-of-row-7": 41.0})})
    assert any("unexpected metric 'age-of-row-7'" in p for p in check_reply(TASK_EVALUATE, unknown))


def test_stats_allow_only_sums_and_counts() -> None:
    good = RecordDict({"stats": MetricRecord({"rows": 5.0, "positives": 1.0, "sum/age": 200.0})})
    assert check_reply(TASK_STATS, good) == []
    bad = RecordDict({"stats": MetricRecord({"rows": 5.0, "min/age": 18.0})})
    assert check_reply(TASK_STATS, bad)


def test_identity_strings_are_bounded() -> None:
    fields = {"company-id": "a", "dataset-id": "a/b", "public-key": "k", "signature": "s"}
    assert check_reply(TASK_IDENTIFY, RecordDict({"identity": ConfigRecord(fields)})) == []
    long = dict(fields, signature="x" * 5000)
    assert check_reply(TASK_IDENTIFY, RecordDict({"identity": ConfigRecord(long)}))
    extra = dict(fields, note="hello")
    assert check_reply(TASK_IDENTIFY, RecordDict({"identity": ConfigRecord(extra)}))


def test_unknown_task_is_refused() -> None:
    assert check_reply("exfiltrate", RecordDict({})) == ["unknown task 'exfiltrate'"]


def test_an_assessment_reply_carries_only_its_named_metrics() -> None:
    good = {"num-examples": 75.0, "positives": 7.0, "clean/auc": 0.8, "noise/auc": 0.78}
    good.update({f"calibration/count/{b}": 1.0 for b in range(10)})
    assert check_reply(TASK_ASSESS, RecordDict({"metrics": MetricRecord(good)})) == []
    for smuggled in ({"clean/auc-row-3": 1.0}, {"calibration/count/10": 1.0}, {"score/0": 0.4}):
        reply = RecordDict({"metrics": MetricRecord({**good, **smuggled})})
        assert any("unexpected metric" in p for p in check_reply(TASK_ASSESS, reply))
    with_arrays = RecordDict({"metrics": MetricRecord(good), "arrays": update()})
    assert any("unexpected records" in p for p in check_reply(TASK_ASSESS, with_arrays))


def test_a_model_scoring_reply_scores_exactly_the_models_sent() -> None:
    def reply(metrics: dict[str, float]) -> RecordDict:
        return RecordDict({"metrics": MetricRecord({"num-examples": 75.0, **metrics})})

    good = {"loss/0": 0.3, "auc/0": 0.8, "loss/1": 0.4}  # model 1: one class, AUC left out
    assert check_reply(TASK_EVALUATE_MODELS, reply(good), model_count=2) == []
    too_many = check_reply(TASK_EVALUATE_MODELS, reply({**good, "loss/2": 0.1}), model_count=2)
    assert any("name model 2, but 2 were sent" in p for p in too_many)
    short = check_reply(TASK_EVALUATE_MODELS, reply({"loss/0": 0.3}), model_count=2)
    assert any("a loss for 1 of the 2 models" in p for p in short)
    for bad in ({"loss/01": 0.3}, {"loss/-1": 0.3}, {"score/0": 0.5}, {"loss/12345": 0.3}):
        problems = check_reply(TASK_EVALUATE_MODELS, reply({**good, **bad}), model_count=2)
        assert any("unexpected metric" in p for p in problems), bad


def test_models_stack_and_unstack() -> None:
    models = [
        {"0.weight": np.full((1, 4), i, np.float32), "0.bias": np.full(1, -i, np.float32)}
        for i in range(3)
    ]
    stacked = stack_models(models)
    assert stacked["0.weight"].shape == (3, 1, 4) and stacked["0.bias"].shape == (3, 1)
    back = unstack_models(stacked)
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(models, back, strict=True) for k in a)
    with pytest.raises(ValueError, match="same arrays"):
        stack_models([models[0], {"0.weight": models[1]["0.weight"]}])
    with pytest.raises(ValueError, match="disagree"):
        unstack_models({"a": np.zeros((2, 3)), "b": np.zeros((3, 3))})


def test_a_nodes_error_is_read_in_its_own_words() -> None:
    from coordinator.errors import node_error

    wrapped = (
        "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'\x1b[36mray::ClientAppActor"
        ".run()\x1b[39m ... Exception ClientAppException occurred. Message: acme dropped out'>\n"
    )
    assert node_error(wrapped) == "acme dropped out"
    assert node_error("") == "unspecified error"
    assert len(node_error("x" * 1000)) == 300


def test_a_witness_answer_rides_on_evaluations_only() -> None:
    metrics = MetricRecord({"num-examples": 10, "auc": 0.7})
    answer = ConfigRecord({"status": 200, "body": "\u2014 acme AAAA\n"})
    assert check_reply(TASK_EVALUATE, RecordDict({"metrics": metrics, "witness": answer})) == []
    assert check_reply(TASK_EVALUATE, RecordDict({"metrics": metrics})) == []  # optional
    odd = ConfigRecord({"status": 200, "body": "x", "rows": "1,2,3"})
    assert check_reply(TASK_EVALUATE, RecordDict({"metrics": metrics, "witness": odd}))
    long = ConfigRecord({"status": 200, "body": "x" * 5000})
    assert check_reply(TASK_EVALUATE, RecordDict({"metrics": metrics, "witness": long}))
    assert any(
        "unexpected records" in p
        for p in check_reply(TASK_TRAIN, train_reply(witness=answer), SHAPES)
    )
