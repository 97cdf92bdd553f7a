"""Conformance: the RFC 6962 proof test vectors, and the seven-leaf example of RFC 6962 2.1.3."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from sandbox.ledger.merkle import (
    consistency_spans,
    inclusion_spans,
    leaf_hash,
    node_hash,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).resolve().parents[1] / "data" / "rfc6962-vectors"


def _vector_files(kind: str) -> list[Path]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    assert files, f"no {kind} vectors under {VECTORS}"
    return files


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _id(path: Path) -> str:
    return str(path.relative_to(VECTORS))


def test_the_vectors_ship_with_their_licence_and_source() -> None:
    assert "Apache License" in (VECTORS / "LICENSE").read_text()
    assert "transparency-dev/merkle" in (VECTORS / "SOURCE.md").read_text()
    # Every tree folder holds a happy path and mutations of it.
    assert len(_vector_files("inclusion")) > 60
    assert len(_vector_files("consistency")) > 60


@pytest.mark.parametrize("path", _vector_files("inclusion"), ids=_id)
def test_inclusion_vector(path: Path) -> None:
    vector = _load(path)
    accepted = verify_inclusion(
        _b64(vector["leafHash"]),
        vector["leafIdx"],
        vector["treeSize"],
        [_b64(element) for element in vector["proof"] or []],
        _b64(vector["root"]),
    )
    assert accepted is (not vector["wantErr"]), vector["desc"]


@pytest.mark.parametrize("path", _vector_files("consistency"), ids=_id)
def test_consistency_vector(path: Path) -> None:
    vector = _load(path)
    accepted = verify_consistency(
        vector["size1"],
        vector["size2"],
        _b64(vector["root1"]),
        _b64(vector["root2"]),
        [_b64(element) for element in vector["proof"] or []],
    )
    assert accepted is (not vector["wantErr"]), vector["desc"]


class SevenLeafTree:
    """The tree of RFC 6962 section 2.1.3 with the RFC's names for its nodes::

                hash
               /    \\
              k      l
             / \\    / \\
            g   h  i   j
           / \\ / \\ / \\  |
           a b c d e f d6
    """

    def __init__(self) -> None:
        self.data = [f"d{i}".encode() for i in range(7)]
        a, b, c, d, e, f, j = (leaf_hash(item) for item in self.data)
        g, h, i = node_hash(a, b), node_hash(c, d), node_hash(e, f)
        k, l = node_hash(g, h), node_hash(i, j)  # noqa: E741  (the RFC's name)
        self.nodes = dict(a=a, b=b, c=c, d=d, e=e, f=f, g=g, h=h, i=i, j=j, k=k, l=l)
        self.root = node_hash(k, l)
        # Spans of the named nodes, to read the planned proofs back as the RFC's names.
        self.span_names = {
            (0, 1): "a", (1, 2): "b", (2, 3): "c", (3, 4): "d", (4, 5): "e", (5, 6): "f",
            (6, 7): "j", (0, 2): "g", (2, 4): "h", (4, 6): "i", (0, 4): "k", (4, 7): "l",
        }  # fmt: skip


@pytest.mark.parametrize(
    ("index", "expected"),
    [(0, "b h l"), (3, "c g l"), (4, "f j k"), (6, "i k")],
)
def test_rfc6962_seven_leaf_inclusion_proofs(index: int, expected: str) -> None:
    tree = SevenLeafTree()
    names = [tree.span_names[span] for span in inclusion_spans(index, 7)]
    assert names == expected.split()
    proof = [tree.nodes[name] for name in names]
    assert verify_inclusion(leaf_hash(tree.data[index]), index, 7, proof, tree.root)
    assert root_from_leaves(leaf_hash(item) for item in tree.data) == tree.root


@pytest.mark.parametrize(
    ("old_size", "expected"),
    [(3, "c d g l"), (4, "l"), (6, "i j k")],
)
def test_rfc6962_seven_leaf_consistency_proofs(old_size: int, expected: str) -> None:
    tree = SevenLeafTree()
    names = [tree.span_names[span] for span in consistency_spans(old_size, 7)]
    assert names == expected.split()
    old_root = root_from_leaves(leaf_hash(item) for item in tree.data[:old_size])
    proof = [tree.nodes[name] for name in names]
    assert verify_consistency(old_size, 7, old_root, tree.root, proof)
    assert not verify_consistency(old_size, 7, old_root, tree.root, proof[:-1])
