"""The Merkle tree of RFC 6962 / RFC 9162 section 2.1, and its proofs.

Leaves are hashed as ``SHA-256(0x00 || entry)`` and interior nodes as
``SHA-256(0x01 || left || right)``; a tree of ``n > 1`` leaves splits at ``k``, the largest
power of two below ``n``.

Every node of such a tree spans a range ``[start, end)`` whose start is a multiple of the
smallest power of two ``>= end - start``. Such a range is the concatenation of *perfect*
subtrees (``2**level`` leaves starting at a multiple of ``2**level``) taken largest first,
following the binary digits of ``end - start``. The ledger therefore stores only the hashes of
perfect subtrees, addressed as ``(level, index)``: any node hash, any root and any proof
element is a right-to-left fold of at most ``log2(n)`` stored hashes.

Proofs are first planned as lists of ranges (pure arithmetic, no hashing); the caller fetches
the perfect-subtree hashes the plan needs in one go and folds them. The verifiers are the
RFC 9162 algorithms (sections 2.1.3.2 and 2.1.4.2). They never raise on malformed input: a
proof that is not exactly right is rejected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"

# The root of the empty tree: the hash of the empty string (RFC 9162 section 2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()

NodeId = tuple[int, int]
"""A perfect subtree ``(level, index)``: leaves ``[index * 2**level, (index + 1) * 2**level)``."""

Span = tuple[int, int]
"""A range of leaves ``[start, end)``."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    """The split point ``k`` of RFC 6962: the largest power of two strictly smaller than ``n``."""
    if n < 2:
        raise ValueError("a split needs at least two leaves")
    return 1 << ((n - 1).bit_length() - 1)


def perfect_subtrees(start: int, end: int) -> list[NodeId]:
    """The perfect subtrees that make up ``[start, end)``, left to right, largest first.

    ``start`` must be aligned as every node of an RFC 6962 tree is (see the module docstring);
    the whole tree ``[0, n)`` always is.
    """
    if not 0 <= start < end:
        raise ValueError(f"not a non-empty range of leaves: [{start}, {end})")
    nodes: list[NodeId] = []
    position = start
    remaining = end - start
    for level in range(remaining.bit_length() - 1, -1, -1):
        if remaining >> level & 1:
            if position % (1 << level):
                raise ValueError(f"[{start}, {end}) is not a node of an RFC 6962 tree")
            nodes.append((level, position >> level))
            position += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """The hash of a range from the hashes of its perfect subtrees (left to right)."""
    if not hashes:
        raise ValueError("nothing to fold")
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def span_hash(span: Span, nodes: Mapping[NodeId, bytes]) -> bytes:
    """The RFC 6962 hash of ``span`` from stored perfect-subtree hashes."""
    return fold([nodes[node] for node in perfect_subtrees(*span)])


def inclusion_spans(index: int, size: int) -> list[Span]:
    """The ranges whose hashes form the inclusion proof of leaf ``index`` in a tree of ``size``.

    RFC 9162 section 2.1.3.1 (``PATH``), ordered from the leaf up to the root.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    spans: list[Span] = []
    start, end = 0, size
    while end - start > 1:
        split = start + largest_power_of_two_below(end - start)
        if index < split:
            spans.append((split, end))
            end = split
        else:
            spans.append((start, split))
            start = split
    spans.reverse()
    return spans


def consistency_spans(old_size: int, new_size: int) -> list[Span]:
    """The ranges whose hashes form the consistency proof from ``old_size`` to ``new_size``.

    RFC 9162 section 2.1.4.1 (``PROOF`` and ``SUBPROOF``), in the RFC's order. The proof is
    empty when the sizes are equal or the old tree is empty.
    """
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return []
    spans: list[Span] = []
    start, end = 0, new_size
    remaining_old = old_size  # the part of the old tree inside [start, end)
    old_tree_is_a_node = True  # the ``b`` flag of SUBPROOF
    while remaining_old != end - start:
        split = largest_power_of_two_below(end - start)
        if remaining_old <= split:
            spans.append((start + split, end))
            end = start + split
        else:
            spans.append((start, start + split))
            start += split
            remaining_old -= split
            old_tree_is_a_node = False
    if not old_tree_is_a_node:
        spans.append((start, end))
    spans.reverse()
    return spans


def nodes_for(spans: Iterable[Span]) -> set[NodeId]:
    """Every perfect subtree needed to hash ``spans``."""
    needed: set[NodeId] = set()
    for span in spans:
        needed.update(perfect_subtrees(*span))
    return needed


def compact_range(size: int) -> list[NodeId]:
    """The perfect subtrees that make up a whole tree of ``size`` leaves."""
    return perfect_subtrees(0, size) if size else []


@dataclass
class CompactRange:
    """The right edge of a growing tree: the hashes of the perfect subtrees of ``[0, size)``.

    Appending a leaf costs amortised O(1) hashes and yields the perfect subtrees it completes,
    which is what the store persists; the root is a fold of at most ``log2(size)`` hashes.
    """

    size: int
    hashes: list[bytes]

    @classmethod
    def empty(cls) -> CompactRange:
        return cls(0, [])

    @classmethod
    def load(
        cls, size: int, lookup: Callable[[list[NodeId]], Mapping[NodeId, bytes]]
    ) -> CompactRange:
        """Rebuild the range for ``size`` from stored perfect-subtree hashes."""
        node_ids = compact_range(size)
        found = lookup(node_ids)
        return cls(size, [found[node] for node in node_ids])

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; return ``(level, index, hash)`` of every perfect subtree completed
        (the leaf itself is level 0)."""
        index = self.size
        completed = [(0, index, leaf)]
        current = leaf
        level = 0
        # Each trailing one bit of the old size is a perfect subtree that merges with the new one.
        while index >> level & 1:
            current = node_hash(self.hashes.pop(), current)
            level += 1
            completed.append((level, index >> level, current))
        self.hashes.append(current)
        self.size += 1
        return completed

    def root(self) -> bytes:
        return fold(self.hashes) if self.hashes else EMPTY_ROOT


def root_from_leaves(leaves: Iterable[bytes]) -> bytes:
    """The root over already hashed leaves, in one pass with O(log n) memory."""
    tree = CompactRange.empty()
    for leaf in leaves:
        tree.append(leaf)
    return tree.root()


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _valid_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _sibling_sides(fn: int, sn: int, count: int) -> list[bool] | None:
    """Whether each of ``count`` proof elements is a left sibling, walking up from node ``fn``
    of a tree whose last node is ``sn`` (the loop of RFC 9162 2.1.3.2 and 2.1.4.2); None when a
    proof of ``count`` elements cannot reach the root exactly."""
    sides: list[bool] = []
    for _ in range(count):
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            sides.append(True)
            # On the right edge with no sibling to the right: climb until there is one.
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sides.append(False)
        fn >>= 1
        sn >>= 1
    return sides if sn == 0 else None


def root_from_inclusion_proof(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes | None:
    """The root that ``proof`` implies for ``leaf`` at ``index`` of ``size``; None if the proof
    has the wrong shape (RFC 9162 section 2.1.3.2)."""
    if not (_is_hash(leaf) and _valid_size(index) and _valid_size(size)) or index >= size:
        return None
    if not all(_is_hash(element) for element in proof):
        return None
    sides = _sibling_sides(index, size - 1, len(proof))
    if sides is None:
        return None
    result = leaf
    for element, is_left in zip(proof, sides, strict=True):
        result = node_hash(element, result) if is_left else node_hash(result, element)
    return result


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """True when ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree of ``size`` with
    ``root``. Never raises."""
    if not _is_hash(root):
        return False
    computed = root_from_inclusion_proof(leaf, index, size, proof)
    return computed is not None and computed == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """True when ``proof`` shows the tree of ``old_size`` with ``old_root`` is a prefix of the
    tree of ``new_size`` with ``new_root`` (RFC 9162 section 2.1.4.2). Never raises."""
    if not (_valid_size(old_size) and _valid_size(new_size)) or old_size > new_size:
        return False
    if not (isinstance(old_root, bytes) and isinstance(new_root, bytes)):
        return False
    if not all(_is_hash(element) for element in proof):
        return False
    if old_size == new_size:
        # A tree is consistent with itself and nothing else; the empty tree has one root only.
        if old_size == 0 and old_root != EMPTY_ROOT:
            return False
        return not proof and old_root == new_root
    if old_size == 0:
        # RFC 9162 defines no proof from the empty tree; a claim that needs one is rejected.
        return False
    if not proof or not (_is_hash(old_root) and _is_hash(new_root)):
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is a node itself
        path.insert(0, old_root)
    # Both roots are recomputed along the path of the old tree's last leaf; skip the levels
    # where that leaf is a right child of a node the proof's first element already covers.
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    sides = _sibling_sides(fn, sn, len(path) - 1)
    if sides is None:
        return False
    old_result = new_result = path[0]
    for element, is_left in zip(path[1:], sides, strict=True):
        if is_left:
            old_result = node_hash(element, old_result)
            new_result = node_hash(element, new_result)
        else:
            new_result = node_hash(new_result, element)
    return old_result == old_root and new_result == new_root
