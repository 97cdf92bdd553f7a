"""The keys a company's node trusts, pinned when the company joined.

A node trusts two public keys of the sandbox: the operator's (it signs warrants) and the
installation's regulator key (it signs approvals itself, or endorses the keys of the
regulators who do). They are written to the node folder at joining and change only through a
signed rotation record: a new operator key signed by the pinned operator key, or a new
installation regulator key signed by the pinned regulator key. Nothing the coordinator sends
can change them otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox import identity
from sandbox.files import write_json_atomic
from sandbox.protocol.warrant import KeyRecord, WarrantError
from sandbox.utc import utcnow

PINS_FILE = "pins.json"


class NotPinned(WarrantError):
    """The node has pinned no sandbox keys: it joined no sandbox, so it trusts no warrant."""


@dataclass(frozen=True)
class Pins:
    operator: str
    regulator: str
    rotations: tuple[dict[str, Any], ...] = ()

    def fingerprints(self) -> dict[str, str]:
        return {
            "operator": identity.key_id(self.operator),
            "regulator": identity.key_id(self.regulator),
        }


def pins_path(node_dir: Path) -> Path:
    return node_dir / PINS_FILE


def pin(node_dir: Path, operator: str, regulator: str) -> Pins:
    """Pin the sandbox's keys at joining. A node that has pinned keys keeps them: joining
    again with other keys is refused (rotate with a signed record instead)."""
    for name, key in (("operator", operator), ("regulator", regulator)):
        try:
            identity.decode_public_key_b64(key)
        except ValueError as exc:
            raise WarrantError(
                f"the {name} key to pin is not an Ed25519 public key: {exc}"
            ) from None
    existing = load_pins(node_dir, missing_ok=True)
    if existing is not None:
        if (existing.operator, existing.regulator) != (operator, regulator):
            raise WarrantError(
                "this node already pinned other sandbox keys; a key changes only through a "
                "rotation record signed by the key it replaces"
            )
        return existing
    pins = Pins(operator, regulator)
    _write(node_dir, pins)
    return pins


def load_pins(node_dir: Path, missing_ok: bool = False) -> Pins | None:
    path = pins_path(node_dir)
    if not path.exists():
        if missing_ok:
            return None
        raise NotPinned(
            f"node {node_dir} has pinned no sandbox keys; it trusts no warrant until it joins"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return Pins(str(raw["operator"]), str(raw["regulator"]), tuple(raw.get("rotations", ())))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WarrantError(f"the node's pinned keys ({path}) cannot be read: {exc}") from None


def _pinned(node_dir: Path) -> Pins:
    pins = load_pins(node_dir)
    if pins is None:  # load_pins raises NotPinned unless missing_ok
        raise NotPinned(f"node {node_dir} has pinned no sandbox keys")
    return pins


def rotate(node_dir: Path, record: KeyRecord) -> Pins:
    """Replace a pinned key with the one ``record`` names, if the key it replaces signed it."""
    pins = _pinned(node_dir)
    current = pins.operator if record.role == "operator" else pins.regulator
    if record.signed_by != record.role or not identity.verify(
        current, record.statement(), record.signature
    ):
        raise WarrantError(
            f"the rotation of the {record.role} key is not signed by the {record.role} key "
            "this node pinned"
        )
    entry = {**record.model_dump(mode="json"), "applied_at": utcnow().isoformat()}
    if record.role == "operator":
        rotated = Pins(record.public_key, pins.regulator, (*pins.rotations, entry))
    else:
        rotated = Pins(pins.operator, record.public_key, (*pins.rotations, entry))
    _write(node_dir, rotated)
    return rotated


def _write(node_dir: Path, pins: Pins) -> None:
    write_json_atomic(
        pins_path(node_dir),
        {"operator": pins.operator, "regulator": pins.regulator, "rotations": list(pins.rotations)},
    )
