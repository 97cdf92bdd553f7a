"""The company's side of secure aggregation (Flower's SecAgg+, legacy stack).

Two mods around the train function:

- ``secure_aggregation_mod`` sends SecAgg+ protocol messages through Flower's
  ``secaggplus_mod``, which masks the update so that the coordinator only ever learns the sum.
  A plain train task for a job whose plan requires secure aggregation is refused: the company
  does not hand out an unmasked update because a coordinator asked for one.
- ``secure_update_mod`` (inside it) turns the legacy FitIns into the ordinary train task, and
  the reply into the legacy FitRes SecAgg+ masks. What is masked is the *update* (trained
  model minus the global model): it is small, so it quantizes finely within the clipping
  range, and the company checks it against that range and the job's norm bound before it is
  masked, because after masking nobody can.

A reply's metrics and receipt travel in clear beside the masked update (flattened into the
FitRes metrics as ``metrics.<name>`` and ``<record>.<field>``), so the coordinator can check
and record them per company.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from sandbox.protocol.messages import (
    ARRAYS,
    CONFIG,
    METRICS,
    SECURE_ARRAY_KEYS,
    SECURE_CLIPPING_RANGE,
    TrainingPlan,
    number,
    update_norm,
)

FITINS_PARAMETERS = "fitins.parameters"


class SecureUpdateRefused(RuntimeError):
    """The company will not send this update (unmasked, or outside the agreed bounds)."""


def _plan(config: ConfigRecord | dict) -> TrainingPlan:  # type: ignore[type-arg]
    return TrainingPlan.model_validate_json(str(config["plan"]))


def secure_aggregation_mod(msg: Message, ctx: Context, call_next: ClientAppCallable) -> Message:
    if msg.has_content() and RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, ctx, call_next)
    if msg.has_content() and CONFIG in msg.content.config_records:
        config = msg.content.config_records[CONFIG]
        if "plan" in config and _plan(config).secure_aggregation:
            raise SecureUpdateRefused(
                "this job requires secure aggregation; the update is not sent unmasked"
            )
    return call_next(msg, ctx)


def flatten_reply(content: RecordDict) -> dict[str, int | float | str | bytes | bool]:
    """A train reply's metrics and other config records as legacy FitRes metrics."""
    flat: dict[str, int | float | str | bytes | bool] = {}
    for name, record in content.metric_records.items():
        for key, value in record.items():
            if not isinstance(value, list):
                flat[f"{name}.{key}"] = value
    for name, config in content.config_records.items():
        for key, setting in config.items():
            if not isinstance(setting, list):
                flat[f"{name}.{key}"] = setting
    return flat


def secure_update_mod(msg: Message, ctx: Context, call_next: ClientAppCallable) -> Message:
    if not (msg.has_content() and FITINS_PARAMETERS in msg.content.array_records):
        return call_next(msg, ctx)
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    keys = str(fitins.config[SECURE_ARRAY_KEYS]).split(",")
    clipping_range = float(fitins.config[SECURE_CLIPPING_RANGE])
    global_arrays = parameters_to_ndarrays(fitins.parameters)
    if len(keys) != len(global_arrays):
        raise SecureUpdateRefused("the task names a different number of arrays than it carries")
    config = ConfigRecord(
        {
            k: v
            for k, v in fitins.config.items()
            if k not in (SECURE_ARRAY_KEYS, SECURE_CLIPPING_RANGE)
        }
    )
    secure_config = msg.content.config_records[RECORD_KEY_CONFIGS]
    msg.content = RecordDict(
        {
            ARRAYS: ArrayRecord({k: Array(v) for k, v in zip(keys, global_arrays, strict=True)}),
            CONFIG: config,
        }
    )
    reply = call_next(msg, ctx)
    if reply.has_error():
        return reply
    updated = reply.content.array_records[ARRAYS]
    reference = dict(zip(keys, global_arrays, strict=True))
    trained = {k: updated[k].numpy() for k in keys}
    delta = [
        (trained[k].astype(np.float64) - reference[k].astype(np.float64)).astype(np.float32)
        for k in keys
    ]
    if not all(np.isfinite(d).all() for d in delta):
        raise SecureUpdateRefused("the update holds NaN or infinite values")
    largest = max(float(np.abs(d).max()) for d in delta if d.size) if delta else 0.0
    if largest > clipping_range:
        raise SecureUpdateRefused(
            f"an update entry of {largest:.4g} lies outside the secure aggregation's clipping "
            f"range {clipping_range:g}; it would be clipped without anyone noticing"
        )
    bound = _plan(config).max_update_norm
    if bound is not None and update_norm(trained, reference) > bound:
        raise SecureUpdateRefused(
            f"update norm {update_norm(trained, reference):.4g} exceeds the job's bound {bound:g}"
        )
    metrics = reply.content.metric_records[METRICS]
    fitres = FitRes(
        status=Status(Code.OK, "ok"),
        parameters=ndarrays_to_parameters(delta),
        num_examples=int(number(metrics, "num-examples")),
        metrics=flatten_reply(reply.content),
    )
    out = compat.fitres_to_recorddict(fitres, keep_input=True)
    out.config_records[RECORD_KEY_CONFIGS] = secure_config
    return Message(out, reply_to=msg)
