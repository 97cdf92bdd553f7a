"""Checks on what a company sends: norm of the update, masked replies, the clear-text
records beside a masked update, and the company's refusal to send an update unmasked."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.supercore.task_identity import TaskIdentity

from clients.secure import SecureUpdateRefused, flatten_reply, secure_aggregation_mod
from coordinator.secure import unflatten_reply
from sandbox.protocol.messages import (
    check_arrays,
    check_reply,
    check_update_norm,
    to_array_record,
    update_norm,
)
from tests.support.world import tiny_plan

GLOBAL = {"0.weight": np.zeros((1, 3), np.float32), "0.bias": np.zeros(1, np.float32)}
SHAPES = {"0.weight": (1, 3), "0.bias": (1,)}


def test_update_norm_is_the_distance_from_the_global_model() -> None:
    update = {
        "0.weight": np.array([[3.0, 0.0, 0.0]], np.float32),
        "0.bias": np.array([4.0], np.float32),
    }
    assert update_norm(update, GLOBAL) == pytest.approx(5.0)
    assert check_update_norm(update, GLOBAL, 5.0) == []
    assert check_update_norm(update, GLOBAL, 4.9) == ["update norm 5 exceeds the job's bound 4.9"]


def test_each_malformed_update_is_refused_with_its_own_reason() -> None:
    nan = dict(GLOBAL, **{"0.bias": np.array([np.nan], np.float32)})
    wide = dict(GLOBAL, **{"0.weight": np.zeros((1, 4), np.float32)})
    double = dict(GLOBAL, **{"0.bias": np.zeros(1, np.float64)})
    assert check_arrays(to_array_record(nan), SHAPES) == [
        "array '0.bias' holds NaN or infinite values"
    ]
    assert check_arrays(to_array_record(wide), SHAPES) == [
        "array '0.weight' has shape (1, 4), expected (1, 3)"
    ]
    assert check_arrays(to_array_record(double), SHAPES) == [
        "array '0.bias' has dtype float64, expected float32"
    ]


def test_a_masked_reply_must_not_carry_arrays() -> None:
    metrics = MetricRecord({"num-examples": 10.0, "loss": 0.3})
    assert check_reply("train", RecordDict({"metrics": metrics}), masked=True) == []
    with_arrays = RecordDict({"metrics": metrics, "arrays": to_array_record(GLOBAL)})
    assert check_reply("train", with_arrays, masked=True) == [
        "a securely aggregated reply must not carry its arrays"
    ]
    assert check_reply("train", RecordDict({"metrics": metrics})) == [
        "reply lacks records ['arrays']"
    ]


def test_clear_text_records_survive_the_legacy_round_trip() -> None:
    content = RecordDict(
        {
            "arrays": ArrayRecord(),
            "metrics": MetricRecord({"num-examples": 10.0, "epsilon": 0.25}),
            "receipt": ConfigRecord({"payload": "p", "signature": "s"}),
        }
    )
    flat = flatten_reply(content)
    assert flat == {
        "metrics.num-examples": 10.0,
        "metrics.epsilon": 0.25,
        "receipt.payload": "p",
        "receipt.signature": "s",
    }
    rebuilt = unflatten_reply(flat)
    assert dict(rebuilt.metric_records["metrics"]) == {"num-examples": 10.0, "epsilon": 0.25}
    assert dict(rebuilt.config_records["receipt"]) == {"payload": "p", "signature": "s"}
    assert check_reply("train", rebuilt, masked=True) == []
    with pytest.raises(ValueError):
        unflatten_reply({"loose": 1.0})
    # Anything else a company adds is still held to the allow-list.
    smuggled = unflatten_reply({**flat, "rows.age": "37"})
    assert check_reply("train", smuggled, masked=True) == [
        "reply carries unexpected records ['rows']"
    ]


def test_a_company_does_not_send_an_unmasked_update_for_a_secure_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A Message can only be built inside a Flower task; stand in for one.
    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    calls = []

    def train(message: Message, _context: Context) -> Message:
        calls.append(message)
        return Message(RecordDict(), reply_to=message)

    def task(secure: bool) -> Message:
        config = ConfigRecord(
            {"task": "train", "plan": tiny_plan(secure_aggregation=secure).model_dump_json()}
        )
        message = Message(
            RecordDict({"config": config}), dst_node_id=1, message_type=MessageType.TRAIN
        )
        message.metadata._src_node_id = 0  # type: ignore[attr-defined]
        return message

    secure_aggregation_mod(task(False), context, train)
    assert len(calls) == 1
    with pytest.raises(SecureUpdateRefused, match="requires secure aggregation"):
        secure_aggregation_mod(task(True), context, train)
    assert len(calls) == 1
