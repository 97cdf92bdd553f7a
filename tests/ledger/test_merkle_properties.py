"""Properties of the tree code, against the naive reference and under bit flips."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    NodeId,
    consistency_spans,
    inclusion_spans,
    leaf_hash,
    root_from_leaves,
    span_hash,
    verify_consistency,
    verify_inclusion,
)
from tests.ledger import naive_merkle as naive

MAX_TREE = 300


def entries_for(n: int, salt: int = 0) -> list[bytes]:
    return [f"entry {salt}:{i}".encode() for i in range(n)]


def stored_nodes(entries: list[bytes]) -> dict[NodeId, bytes]:
    """What the ledger would store: every perfect subtree the appends complete."""
    tree = CompactRange.empty()
    nodes: dict[NodeId, bytes] = {}
    for entry in entries:
        nodes.update(((level, index), node) for level, index, node in tree.append(leaf_hash(entry)))
    return nodes


def flip_bit(value: bytes, bit: int) -> bytes:
    data = bytearray(value)
    data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data)


@st.composite
def tree_and_index(draw: st.DrawFn) -> tuple[int, int, int]:
    n = draw(st.integers(1, MAX_TREE))
    return n, draw(st.integers(0, n - 1)), draw(st.integers(0, 3))


@st.composite
def tree_and_old_size(draw: st.DrawFn) -> tuple[int, int, int]:
    n = draw(st.integers(2, MAX_TREE))
    return n, draw(st.integers(1, n - 1)), draw(st.integers(0, 3))


@given(st.integers(1, 2**48), st.data())
def test_proof_lengths_are_logarithmic(n: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, n - 1))
    old_size = data.draw(st.integers(1, n))
    bound = math.ceil(math.log2(n))
    assert len(inclusion_spans(index, n)) <= bound
    assert len(consistency_spans(old_size, n)) <= bound + 1


@settings(max_examples=150)
@given(tree_and_index())
def test_stored_node_tree_matches_the_naive_tree(case: tuple[int, int, int]) -> None:
    n, index, salt = case
    entries = entries_for(n, salt)
    nodes = stored_nodes(entries)
    root = span_hash((0, n), nodes)
    assert root == naive.mth(entries) == root_from_leaves(map(leaf_hash, entries))
    proof = [span_hash(span, nodes) for span in inclusion_spans(index, n)]
    assert proof == naive.path(index, entries)
    assert verify_inclusion(leaf_hash(entries[index]), index, n, proof, root)
    for old_size in {1, index + 1, n}:
        old_proof = [span_hash(span, nodes) for span in consistency_spans(old_size, n)]
        assert old_proof == naive.proof(old_size, entries)
        old_root = span_hash((0, old_size), nodes)
        assert old_root == naive.mth(entries[:old_size])
        assert verify_consistency(old_size, n, old_root, root, old_proof)


@settings(max_examples=150)
@given(tree_and_index(), st.data())
def test_any_flipped_bit_breaks_an_inclusion_proof(
    case: tuple[int, int, int], data: st.DataObject
) -> None:
    n, index, salt = case
    entries = entries_for(n, salt)
    nodes = stored_nodes(entries)
    root, leaf = span_hash((0, n), nodes), leaf_hash(entries[index])
    proof = [span_hash(span, nodes) for span in inclusion_spans(index, n)]
    assert verify_inclusion(leaf, index, n, proof, root)

    bit = data.draw(st.integers(0, 255), label="hash bit")
    assert not verify_inclusion(flip_bit(leaf, bit), index, n, proof, root)
    assert not verify_inclusion(leaf, index, n, proof, flip_bit(root, bit))
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1), label="proof element")
        changed = [*proof[:position], flip_bit(proof[position], bit), *proof[position + 1 :]]
        assert not verify_inclusion(leaf, index, n, changed, root)
        assert not verify_inclusion(leaf, index, n, proof[:-1], root)
    assert not verify_inclusion(leaf, index, n, [*proof, root], root)

    number_bit = data.draw(st.integers(0, 63), label="number bit")
    assert not verify_inclusion(leaf, index ^ (1 << number_bit), n, proof, root)
    # A tree size alone is not bound by a root: another size whose path has the same shape
    # computes the same root from the same proof. What such a claim names is no real tree
    # head (no tree of that size has this root), and in a checkpoint the size is signed.
    other = n ^ (1 << number_bit)
    accepted = verify_inclusion(leaf, index, other, proof, root)
    same_shape = index < other and naive.path_shape(index, other) == naive.path_shape(index, n)
    assert accepted == same_shape
    if accepted:
        extended = entries + entries_for(max(0, other - n), salt + 100)
        assert naive.mth(extended[:other]) != root


@settings(max_examples=150)
@given(tree_and_old_size(), st.data())
def test_any_flipped_bit_breaks_a_consistency_proof(
    case: tuple[int, int, int], data: st.DataObject
) -> None:
    n, old_size, salt = case
    entries = entries_for(n, salt)
    nodes = stored_nodes(entries)
    old_root, new_root = span_hash((0, old_size), nodes), span_hash((0, n), nodes)
    proof = [span_hash(span, nodes) for span in consistency_spans(old_size, n)]
    assert verify_consistency(old_size, n, old_root, new_root, proof)

    bit = data.draw(st.integers(0, 255), label="hash bit")
    assert not verify_consistency(old_size, n, flip_bit(old_root, bit), new_root, proof)
    assert not verify_consistency(old_size, n, old_root, flip_bit(new_root, bit), proof)
    position = data.draw(st.integers(0, len(proof) - 1), label="proof element")
    changed = [*proof[:position], flip_bit(proof[position], bit), *proof[position + 1 :]]
    assert not verify_consistency(old_size, n, old_root, new_root, changed)
    assert not verify_consistency(old_size, n, old_root, new_root, proof[:-1])
    assert not verify_consistency(old_size, n, old_root, new_root, [*proof, new_root])

    number_bit = data.draw(st.integers(0, 63), label="number bit")
    assert not verify_consistency(old_size ^ (1 << number_bit), n, old_root, new_root, proof)
    # As for inclusion: the new size is bound by its root only through a signed checkpoint.
    other = n ^ (1 << number_bit)
    accepted = verify_consistency(old_size, other, old_root, new_root, proof)
    same_shape = old_size < other and naive.proof_shape(old_size, other) == naive.proof_shape(
        old_size, n
    )
    assert accepted == same_shape
    if accepted:
        extended = entries + entries_for(max(0, other - n), salt + 100)
        assert naive.mth(extended[:other]) != new_root


def test_the_empty_tree() -> None:
    assert CompactRange.empty().root() == EMPTY_ROOT == naive.mth([])
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert not verify_consistency(0, 1, EMPTY_ROOT, leaf_hash(b"x"), [])
