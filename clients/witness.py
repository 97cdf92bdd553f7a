"""The company's node as a witness of the sandbox's ledger.

With each evaluation task the coordinator sends the ledger's newest signed checkpoint and
consistency proofs from the sizes it believes the witnesses hold. The node verifies the
checkpoint with the operator key it pinned when it joined, takes the proof from the size it
last cosigned itself, and answers as a C2SP tlog-witness: a cosignature (cosignature/v1,
with the company's key) when the new checkpoint extends the one it cosigned, the size it
holds when the coordinator guessed wrong (409), and a refusal with an alarm, both signed
notes kept in ``witness/alarms/``, when the ledger shows it a rewritten or forked history.
A failure of the witness never fails the task: the evaluation's answer stands.
"""

from __future__ import annotations

import base64
import binascii
import json

from flwr.app import ConfigRecord

from sandbox.ledger.witness import add_checkpoint_request
from sandbox.node.home import NodeHome
from sandbox.node.witness import node_witness
from sandbox.protocol.messages import WITNESS_NOTE, WITNESS_PROOFS

MAX_BODY = 2000


def witness_answer(node: NodeHome, config: ConfigRecord) -> ConfigRecord | None:
    """The node's witness answer to the checkpoint in ``config`` (None: none was sent)."""
    if WITNESS_NOTE not in config:
        return None
    witness = node_witness(node)
    if witness is None:
        return ConfigRecord({"status": 404, "body": "this node pinned no operator key\n"})
    try:
        proofs = json.loads(str(config.get(WITNESS_PROOFS, "{}")))
        held = witness.latest()
        size = 0 if held is None else held[0].size
        proof = proofs.get(str(size)) if isinstance(proofs, dict) else None
        if proof is None and size:
            return ConfigRecord({"status": 409, "body": f"{size}\n"})
        hashes = [base64.b64decode(h, validate=True) for h in proof or []]
    except (ValueError, binascii.Error, TypeError):
        return ConfigRecord({"status": 400, "body": "malformed witness request\n"})
    answer = witness.add_checkpoint(add_checkpoint_request(size, hashes, str(config[WITNESS_NOTE])))
    return ConfigRecord({"status": answer.status, "body": answer.body[:MAX_BODY]})


def safe_witness_answer(node: NodeHome, config: ConfigRecord) -> ConfigRecord | None:
    """:func:`witness_answer`, whose failure never fails the task it rides on."""
    try:
        return witness_answer(node, config)
    except (OSError, ValueError, KeyError) as exc:
        return ConfigRecord({"status": 500, "body": f"the witness failed: {exc}"[:MAX_BODY]})


def witnessed_head(node: NodeHome) -> str | None:
    """``<size> <base64 root>`` of the latest checkpoint this node cosigned (None: none)."""
    try:
        witness = node_witness(node)
        held = witness.latest() if witness is not None else None
    except (OSError, ValueError, KeyError):
        return None
    if held is None:
        return None
    return f"{held[0].size} {base64.b64encode(held[0].root).decode('ascii')}"
