"""The company's node as a witness of the sandbox's ledger: its witness state lives in the
node folder (``witness/latest.json``, the last checkpoint it cosigned, and
``witness/alarms/``, the evidence of any history it was shown that does not extend it). It
verifies the ledger's checkpoints with the operator key the node pinned when it joined and
cosigns with the company's key (cosignature/v1 is domain-separated from every other
statement that key signs)."""

from __future__ import annotations

from sandbox.ledger.witness import Witness
from sandbox.node.home import NodeHome
from sandbox.node.pins import load_pins


def node_witness(node: NodeHome) -> Witness | None:
    """The node's witness (None before it pinned the operator's key)."""
    pins = load_pins(node.folder, missing_ok=True)
    if pins is None:
        return None
    return Witness(node.folder / "witness", node.company_id, node.key(), None, pins.operator)
