"""A deliberately naive RFC 6962 reference: the section 2.1 definitions, recursion as written.

``MTH``, ``PATH`` and ``PROOF``/``SUBPROOF`` over the list of entries, recomputing every
subtree from scratch. Slow and obviously right; the tests compare the ledger's stored-node
tree with it.
"""

from __future__ import annotations

import hashlib


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(entries: list[bytes]) -> bytes:
    n = len(entries)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = _k(n)
    return hashlib.sha256(b"\x01" + mth(entries[:k]) + mth(entries[k:])).digest()


def path(m: int, entries: list[bytes]) -> list[bytes]:
    n = len(entries)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*path(m, entries[:k]), mth(entries[k:])]
    return [*path(m - k, entries[k:]), mth(entries[:k])]


def subproof(m: int, entries: list[bytes], complete: bool) -> list[bytes]:
    n = len(entries)
    if m == n:
        return [] if complete else [mth(entries)]
    k = _k(n)
    if m <= k:
        return [*subproof(m, entries[:k], complete), mth(entries[k:])]
    return [*subproof(m - k, entries[k:], False), mth(entries[:k])]


def proof(m: int, entries: list[bytes]) -> list[bytes]:
    return subproof(m, entries, True)


def path_shape(m: int, n: int) -> list[str]:
    """Which side each sibling of ``PATH(m, D[n])`` lies on, leaf first: the only thing an
    inclusion verifier's computation depends on besides the hashes."""
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*path_shape(m, k), "right"]
    return [*path_shape(m - k, n - k), "left"]


def proof_shape(m: int, n: int, complete: bool = True) -> list[str]:
    """The same for ``SUBPROOF(m, D[n], b)``: the recursion's branches and whether the old
    tree's last subtree is itself in the proof."""
    if m == n:
        return [] if complete else ["subtree"]
    k = _k(n)
    if m <= k:
        return [*proof_shape(m, k, complete), "right"]
    return [*proof_shape(m - k, n - k, False), "left"]
