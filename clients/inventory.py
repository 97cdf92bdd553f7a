"""The release inventory: every kind of thing a company's node sends, with its privacy
treatment. The node sends nothing that is not in this table (the gate checks every reply
against it before it leaves), and the README's threat model is written from it.

Treatments:

- ``dp``: the output of record-level DP-SGD, its epsilon written down by the node's
  accountant before it leaves (a model update or the local-only baseline's model);
- ``secure-aggregate``: leaves only masked for SecAgg+, so the coordinator sees the sum of
  the participants' values, never one company's;
- ``declared``: a figure the company already published with its dataset's registration (its
  training-row count, in the manifest) or a public function of it and of the filed spec
  (the DP mechanism's noise, sampling rate and steps, the epsilon they cost);
- ``test-split``: exact measures on the company's held-out test rows (counts, loss, AUC,
  calibration bins): no training row enters them, and the threat model lists them as the
  residual leakage;
- ``exact``: exact figures over the training rows, sent only in jobs without differential
  privacy, which the policy lets train only on data that is not personal, at the low tier;
- ``statement``: the company's signed statements (its identity, receipts, refusal notices,
  its witness cosignatures of the ledger's checkpoints). A receipt carries the task's
  metering (the node's CPU and wall seconds, bytes in and out: the company's business data,
  not personal data).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS as SECAGG

from sandbox.protocol.messages import (
    ARRAYS,
    IDENTITY,
    METRICS,
    NOTICES,
    RECEIPT,
    STATS,
    TASK_ASSESS,
    TASK_BASELINE,
    TASK_EVALUATE,
    TASK_EVALUATE_MODELS,
    TASK_IDENTIFY,
    TASK_STATS,
    TASK_TRAIN,
    WITNESS,
)

Treatment = Literal["dp", "secure-aggregate", "declared", "test-split", "exact", "statement"]
When = Literal["always", "dp", "no-dp", "secure", "plain"]
"""Which jobs a release is in: every job, jobs under DP (or not), under SecAgg+ (or not)."""

_EVAL = r"(num-examples|positives|loss|auc|balanced-accuracy|ece)"
_DP_FIGURES = r"(epsilon|epsilon-job|delta|noise-multiplier|sample-rate|steps)"


@dataclass(frozen=True)
class Release:
    task: str
    record: str
    fields: str
    """A regular expression every field name of the record matches (``*``: any field)."""
    treatment: Treatment
    when: tuple[When, ...]
    """Every condition must hold for the release to be in a job."""
    why: str

    def matches(self, name: str) -> bool:
        return self.fields == "*" or re.fullmatch(self.fields, name) is not None


INVENTORY: tuple[Release, ...] = (
    Release(TASK_IDENTIFY, IDENTITY, "*", "statement", ("always",),
            "the company's id, its dataset's id, its public key and its signature over the "
            "job's challenge"),
    Release(TASK_STATS, STATS, r"rows|positives|(count|sum|sumsq)/.+", "exact", ("no-dp",),
            "counts, sums and sums of squares of the training rows' numeric columns, for "
            "standardisation; under DP the columns are scaled by public bounds instead"),
    Release(TASK_BASELINE, METRICS, _EVAL, "test-split", ("always",),
            "the local-only model's measures on the test split (under DP the model itself "
            "was trained with DP-SGD and paid for)"),
    Release(TASK_BASELINE, METRICS, _DP_FIGURES, "declared", ("dp",),
            "what the DP-trained baseline cost"),
    Release(TASK_TRAIN, ARRAYS, "*", "secure-aggregate", ("secure",),
            "the model update, masked: the coordinator sees only the sum"),
    Release(TASK_TRAIN, ARRAYS, "*", "dp", ("dp", "plain"),
            "the model update, trained with DP-SGD"),
    Release(TASK_TRAIN, ARRAYS, "*", "exact", ("no-dp", "plain"),
            "the model update of a job without DP"),
    Release(TASK_TRAIN, SECAGG, r"pk1|pk2|dsts|ctxts|masked_params|nids|shares",
            "secure-aggregate", ("secure",),
            "the SecAgg+ protocol's own messages (added by Flower's mod after the gate): "
            "public keys, secret shares encrypted to the other nodes, the masked update, and "
            "shares that unmask the sum"),
    Release(TASK_TRAIN, METRICS, r"num-examples", "declared", ("always",),
            "the training-row count the dataset's registration published"),
    Release(TASK_TRAIN, METRICS, _DP_FIGURES, "declared", ("dp",),
            "what the round's DP-SGD run cost"),
    Release(TASK_TRAIN, METRICS, r"loss|steps", "exact", ("no-dp",),
            "the training loss, withheld under DP"),
    Release(TASK_EVALUATE, METRICS, _EVAL, "test-split", ("always",),
            "the global model's measures on the test split"),
    Release(TASK_ASSESS, METRICS, r"num-examples|positives|missing/feature|shift/category"
            r"|(clean|noise|missing|shift)/(loss|auc|balanced-accuracy|ece)"
            r"|calibration/(count|score|label)/\d+", "test-split", ("always",),
            "the release assessment on the test split, clean and perturbed"),
    Release(TASK_ASSESS, METRICS, r"clean/auc-(low|high)|gap/auc(-low|-high)?", "test-split",
            ("always",), "95% intervals of the AUC and of the gap to the company's local-only "
            "model, paired on the test split"),
    Release(TASK_ASSESS, METRICS, r"calib/[01]/(pos|neg)/\d+", "test-split", ("always",),
            "histograms of the model's logits per class on two halves of the test split, "
            "from which the coordinator fits the calibration map"),
    Release(TASK_ASSESS, METRICS, r"importance/\d+", "test-split", ("always",),
            "each feature's permutation importance (AUC lost) on the test split"),
    Release(TASK_ASSESS, METRICS, r"group/\d+/\d+/(rows|positives|tp|fp|hist-(pos|neg)/\d)",
            "test-split", ("always",),
            "counts by group of the protected attributes the manifest declares, on the test "
            "split (rows, positives, true and false positives, score histograms per class)"),
    Release(TASK_EVALUATE_MODELS, METRICS, r"num-examples|positives|(loss|auc)/\d+",
            "test-split", ("plain",),
            "coalition models' loss and AUC on the test split (contribution estimate)"),
)  # fmt: skip

STATEMENT_RECORDS = {
    RECEIPT: "the receipt",
    NOTICES: "refusal notices",
    WITNESS: "the node's witness answer (a C2SP cosignature of the ledger's checkpoint)",
}


def applies(release: Release, dp: bool, secure: bool) -> bool:
    holds = {"always": True, "dp": dp, "no-dp": not dp, "secure": secure, "plain": not secure}
    return all(holds[condition] for condition in release.when)


def allowed_tasks(dp: bool, secure: bool) -> set[str]:
    """The tasks a node does at all in such a job (identification aside)."""
    return {r.task for r in INVENTORY if applies(r, dp, secure)}


def describe(content: RecordDict) -> dict[str, dict[str, Any]]:
    """A reply's shape as the inventory sees it: each record's kind and field names."""
    described: dict[str, dict[str, Any]] = {}
    for name, record in content.items():
        fields = (
            sorted(record.keys())
            if isinstance(record, ArrayRecord | MetricRecord | ConfigRecord)
            else []
        )
        described[name] = {"kind": type(record).__name__, "fields": fields}
    return described


def check_outgoing(task: str, content: RecordDict, dp: bool, secure: bool) -> list[str]:
    """Every part of a reply that the inventory does not allow for this task in such a job
    (empty: the reply may leave)."""
    return check_wire(task, describe(content), dp, secure)


def check_wire(task: str, records: dict[str, dict[str, Any]], dp: bool, secure: bool) -> list[str]:
    """:func:`check_outgoing` on a reply's shape (:func:`describe`), as it was captured at
    the node's edge: after the gate, and after SecAgg+ masked the update."""
    releases = [r for r in INVENTORY if r.task == task and applies(r, dp, secure)]
    if not releases:
        return [f"this node sends nothing for task {task!r} in such a job"]
    records, problems = _unwrapped(records, secure)
    for name, record in records.items():
        kind, fields = record["kind"], record["fields"]
        if name in STATEMENT_RECORDS:
            if kind != "ConfigRecord":
                problems.append(f"{STATEMENT_RECORDS[name]} must be a signed statement")
            continue
        for_record = [r for r in releases if r.record == name]
        if not for_record:
            problems.append(f"record {name!r} is not in the release inventory for {task!r}")
            continue
        if kind == "ArrayRecord":
            continue  # arrays are released as a whole: their treatment is the release's
        if kind not in ("MetricRecord", "ConfigRecord"):
            problems.append(f"record {name!r} is of a kind the node never sends")
            continue
        for field in fields:
            if not any(r.matches(field) for r in for_record):
                problems.append(
                    f"{name}.{field} of task {task!r} is not in the release inventory for a "
                    f"job {'under' if dp else 'without'} DP"
                )
    return problems


_LEGACY = "fitres."
_LEGACY_PARTS = {"fitres.metrics", "fitres.num_examples", "fitres.parameters", "fitres.status"}


def _unwrapped(
    records: dict[str, dict[str, Any]], secure: bool
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The records of a SecAgg+ train reply as the gate let them out. Flower's SecAgg+ mod
    speaks the legacy FitRes format: the gate's records flattened into ``fitres.metrics``
    (``record.field``), the row count again in ``fitres.num_examples``, a status, and the
    update's arrays, which the mask must have emptied (the masked update travels in the
    SecAgg+ record)."""
    if not any(name.startswith(_LEGACY) for name in records):
        return records, []
    problems = [f"record {n!r} is not a FitRes part" for n in records if n.startswith(_LEGACY)
                and n not in _LEGACY_PARTS]  # fmt: skip
    if not secure:
        problems.append("a legacy FitRes reply leaves only through SecAgg+")
    out = {n: r for n, r in records.items() if not n.startswith(_LEGACY)}
    if records.get("fitres.parameters", {}).get("fields"):
        problems.append("the update's arrays left unmasked beside the SecAgg+ record")
    if set(records.get("fitres.num_examples", {}).get("fields", [])) - {"num_examples"}:
        problems.append("fitres.num_examples holds more than the row count")
    if set(records.get("fitres.status", {}).get("fields", [])) - {"code", "message"}:
        problems.append("fitres.status holds more than a status")
    for flat in records.get("fitres.metrics", {}).get("fields", []):
        name, _, field = flat.partition(".")
        if not field:
            problems.append(f"fitres.metrics.{flat} names no record")
            continue
        kind = "ConfigRecord" if name in STATEMENT_RECORDS else "MetricRecord"
        out.setdefault(name, {"kind": kind, "fields": []})["fields"].append(field)
    return out, problems
