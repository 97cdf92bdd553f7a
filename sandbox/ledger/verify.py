"""Verification: recompute the log from its entries and compare with everything stored or signed.

The same replay serves a database and an export bundle. It walks the entries in index order,
hashes each one, grows the tree, and checks in turn: the stored leaf hash, the stored root
right after the entry, and the root of every signed checkpoint. The first index at which the
evidence disagrees is the first bad index. Where only a signature can tell (someone rewrote
an entry *and* every hash stored after it), the entries between the last checkpoint that
still matches and the first one that does not are suspect, and the first of them is named.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import ColumnElement, Table, and_, func, literal, or_, select
from sqlalchemy.engine import Connection, Engine

from sandbox.canonical import parse_canonical
from sandbox.ledger.chain import chain_problems
from sandbox.ledger.checkpoint import Checkpoint, parse_checkpoint_body, verify_checkpoint
from sandbox.ledger.errors import CheckpointError, LedgerIntegrityError
from sandbox.ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_spans,
    leaf_hash,
    verify_consistency,
)
from sandbox.ledger.records import is_canonical
from sandbox.ledger.store import (
    HEAD_ID,
    QUERY_COLUMNS,
    checkpoint_table,
    entry_table,
    head_table,
    node_table,
    parties,
    party_table,
    query_columns,
    read_snapshot,
    span_hashes,
)

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` while entries are checked."""

MAX_PROBLEMS = 50


@dataclass
class VerificationReport:
    """The outcome of a verification. ``ok`` only when no problem was found.

    ``size`` is the number of entries the log claims; ``attested_size`` the largest size whose
    signed checkpoint matched the recomputed tree; ``first_bad_index`` the first entry that
    cannot be trusted (None when every entry checked out, even if, say, a checkpoint's
    signature failed).
    """

    ok: bool
    size: int
    first_bad_index: int | None
    problems: list[str]
    checkpoints: int = 0
    attested_size: int = 0
    indices: list[int | None] = field(default_factory=list)
    """The entry index each problem concerns (None: the log as a whole), in step with
    ``problems``."""


@dataclass
class Findings:
    """Problems as they are found; keeps the smallest bad index."""

    problems: list[str] = field(default_factory=list)
    indices: list[int | None] = field(default_factory=list)
    first_bad_index: int | None = None

    def bad(self, index: int | None, message: str) -> None:
        if index is not None and (self.first_bad_index is None or index < self.first_bad_index):
            self.first_bad_index = index
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(message)
            self.indices.append(index)
        elif len(self.problems) == MAX_PROBLEMS:
            self.problems.append("(further problems not listed)")
            self.indices.append(None)

    def report(self, size: int, checkpoints: int, attested_size: int) -> VerificationReport:
        return VerificationReport(
            ok=not self.problems,
            size=size,
            first_bad_index=self.first_bad_index,
            problems=list(self.problems),
            checkpoints=checkpoints,
            attested_size=attested_size,
            indices=list(self.indices),
        )


@dataclass(frozen=True)
class ClaimedCheckpoint:
    """A checkpoint as stored or exported: the size and root beside it, and its signed note."""

    size: int
    root: bytes
    note: str


def verified_checkpoints(
    claimed: Iterable[ClaimedCheckpoint],
    public_key: Ed25519PublicKey | bytes | str,
    origin: str,
    findings: Findings,
) -> dict[int, bytes]:
    """The signed roots by size, from every checkpoint whose signature holds; the chain of
    those checkpoints is checked too (:mod:`sandbox.ledger.chain`).

    A checkpoint whose signature fails, or whose stored size and root differ from what its
    note says, is a problem and contributes nothing.
    """
    signed: dict[int, bytes] = {}
    chain: list[Checkpoint] = []
    for item in claimed:
        try:
            checkpoint = verify_checkpoint(item.note, public_key, origin=origin)
        except CheckpointError as exc:
            findings.bad(None, f"checkpoint at size {item.size}: {exc}")
            continue
        if (checkpoint.size, checkpoint.root) != (item.size, item.root):
            findings.bad(
                None,
                f"checkpoint at size {item.size}: the size and root stored beside it differ "
                f"from its signed note (size {checkpoint.size})",
            )
            continue
        if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
            findings.bad(None, "checkpoint at size 0: a signed root for the empty tree is wrong")
            continue
        signed[checkpoint.size] = checkpoint.root
        chain.append(checkpoint)
    for _size, message in chain_problems(chain):
        findings.bad(None, message)
    return signed


def add_pins(
    signed: dict[int, bytes],
    notes: Iterable[tuple[str, str]],
    public_key: Ed25519PublicKey | bytes | str,
    origin: str,
    findings: Findings,
) -> None:
    """Add checkpoints held outside the log (``(where, note)``: a pinned note, the signer's
    own memory) to the signed roots the replay must meet. A note that does not verify, or
    that signs another root at a size the log also signed, is a problem; a pinned size
    beyond the log's entries makes the replay report them missing (rolled back)."""
    for where, note in notes:
        try:
            checkpoint = verify_checkpoint(note, public_key, origin=origin)
        except CheckpointError as exc:
            findings.bad(None, f"{where}: {exc}")
            continue
        held = signed.get(checkpoint.size)
        if held is not None and held != checkpoint.root:
            findings.bad(
                None,
                f"{where} signs another root at size {checkpoint.size} than the log's "
                "checkpoint there: the log shows a split view",
            )
            continue
        signed[checkpoint.size] = checkpoint.root


class Replay:
    """Rebuilds the tree entry by entry and checks it against stored and signed hashes.

    Feed entries in index order with :meth:`add`; it returns the perfect subtrees each entry
    completes (for comparison with stored nodes), or None once the log has failed, after
    which nothing further can be trusted and feeding should stop.
    """

    def __init__(self, signed_roots: Mapping[int, bytes], findings: Findings) -> None:
        self.tree = CompactRange.empty()
        self.signed_roots = signed_roots
        self.findings = findings
        self.attested_size = 0
        self.failed = False

    @property
    def size(self) -> int:
        return self.tree.size

    def fail(self, index: int, message: str) -> None:
        self.failed = True
        self.findings.bad(index, message)

    def add(
        self,
        entry: bytes,
        stored_leaf: bytes | None = None,
        stored_root: bytes | None = None,
        canonical: bool | None = None,
    ) -> list[tuple[int, int, bytes]] | None:
        """Replay one entry (``canonical``: whether it is its own RFC 8785 form, when the
        caller parsed it already)."""
        if self.failed:
            return None
        index = self.tree.size
        leaf = leaf_hash(entry)
        if stored_leaf is not None and stored_leaf != leaf:
            self.fail(index, f"entry {index}: its content does not match its leaf hash (changed)")
            return None
        if not (is_canonical(entry) if canonical is None else canonical):
            self.fail(index, f"entry {index}: not in RFC 8785 canonical form (re-serialised)")
            return None
        completed = self.tree.append(leaf)
        root = self.tree.root()
        if stored_root is not None and stored_root != root:
            self.fail(
                index,
                f"entry {index}: the tree root after it is not the one stored "
                "(entries were reordered, inserted or removed)",
            )
            return None
        signed = self.signed_roots.get(index + 1)
        if signed is not None:
            if signed != root:
                # Without a stored hash that already named an entry in this stretch, the first
                # entry the signature no longer vouches for is the first bad one.
                earlier = self.findings.first_bad_index
                named = earlier is not None and earlier >= self.attested_size
                self.fail(
                    earlier if earlier is not None and named else self.attested_size,
                    f"entries {self.attested_size}..{index} do not produce the root signed "
                    f"at size {index + 1}: one of them was changed",
                )
                return None
            self.attested_size = index + 1
        return completed

    def finish(self, claimed_size: int) -> None:
        """Check the entry count against the claimed size and the signed sizes."""
        if self.failed:
            return
        largest_signed = max(self.signed_roots, default=0)
        if self.size < largest_signed:
            self.fail(
                self.size,
                f"only {self.size} entries, but a checkpoint was signed at size "
                f"{largest_signed}: entries from index {self.size} on are missing (truncated)",
            )
        elif self.size < claimed_size:
            self.fail(
                self.size, f"entries from index {self.size} to {claimed_size - 1} are missing"
            )


ENTRY_CHUNK = 5_000


def verify_database(
    engine: Engine,
    public_key: Ed25519PublicKey | bytes | str,
    origin: str,
    progress: Progress | None = None,
    signer_note: str | None = None,
    pins: Sequence[tuple[str, str]] = (),
) -> VerificationReport:
    """Verify the ledger stored in ``engine`` against checkpoints signed by ``public_key``.

    Recomputes every leaf hash, the root after every entry, every stored tree node and every
    query column from the entries; checks every checkpoint's signature, its root against the
    recomputed tree and its consistency with the one before; and looks for rows beyond the
    log's size. ``signer_note`` (the signer's memory of the last checkpoint it signed) and
    ``pins`` (checkpoints held elsewhere) must be met by the entries too: a database rolled
    back below them, or rewritten under them, fails. Reads one snapshot of the database, so
    appends may go on meanwhile.
    """
    findings = Findings()
    with read_snapshot(engine) as conn:
        head = conn.execute(
            select(head_table.c.origin, head_table.c.size).where(head_table.c.id == HEAD_ID)
        ).first()
        if head is None:
            findings.bad(None, "the database holds no ledger (its head row is missing)")
            return findings.report(0, 0, 0)
        if head.origin != origin:
            findings.bad(None, f"the database holds the ledger of {head.origin!r}, not {origin!r}")
        size = head.size
        claimed = [
            ClaimedCheckpoint(row.size, row.root, row.note)
            for row in conn.execute(
                select(
                    checkpoint_table.c.size, checkpoint_table.c.root, checkpoint_table.c.note
                ).order_by(checkpoint_table.c.size)
            )
        ]
        signed = verified_checkpoints(claimed, public_key, origin, findings)
        stored_sizes = set(signed)
        held = list(pins)
        if signer_note is not None:
            held.append(("the signer's last checkpoint", signer_note))
        add_pins(signed, held, public_key, origin, findings)
        if signer_note is not None:
            _check_signer_checkpoint_stored(signer_note, stored_sizes, findings)
        replay = Replay(signed, findings)
        _check_entries(conn, size, replay, findings, progress)
        replay.finish(size)
        _check_rows_beyond(conn, size, findings)
        if not replay.failed:
            _check_checkpoint_consistency(conn, signed, findings)
    return findings.report(size, len(signed), replay.attested_size)


def _check_signer_checkpoint_stored(note: str, stored_sizes: set[int], findings: Findings) -> None:
    """The checkpoint the signer signed last must be among the database's checkpoints."""
    try:
        size = parse_checkpoint_body(note[: note.rfind("\n\n") + 1]).size
    except CheckpointError:
        return  # add_pins already reported the note
    if size not in stored_sizes:
        findings.bad(
            None,
            f"the checkpoint the signer signed last (size {size}) is missing from the "
            "database: checkpoints were deleted",
        )


def _nodes_completed_by(first: int, last: int) -> list[tuple[int, int, int]]:
    """``(level, lowest, highest)`` index ranges of the perfect subtrees of two or more leaves
    that leaves ``first..last`` complete (node ``j`` of level ``l`` ends at leaf
    ``(j + 1) * 2**l - 1``)."""
    ranges = []
    for level in range(1, (last + 1).bit_length()):
        lowest = -(-(first + 1) // (1 << level)) - 1
        highest = (last + 1) // (1 << level) - 1
        if lowest <= highest:
            ranges.append((level, lowest, highest))
    return ranges


def _stored_nodes(conn: Connection, first: int, last: int) -> dict[tuple[int, int], bytes]:
    ranges = _nodes_completed_by(first, last)
    if not ranges:
        return {}
    condition = or_(
        *(
            and_(node_table.c.level == level, node_table.c.idx.between(lowest, highest))
            for level, lowest, highest in ranges
        )
    )
    rows = conn.execute(
        select(node_table.c.level, node_table.c.idx, node_table.c.hash).where(condition)
    )
    return {(row.level, row.idx): row.hash for row in rows}


def _stored_parties(conn: Connection, first: int, last: int) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    rows = conn.execute(
        select(party_table.c.idx, party_table.c.company).where(
            party_table.c.idx.between(first, last)
        )
    )
    for row in rows:
        found.setdefault(row.idx, set()).add(row.company)
    return found


def _check_entries(
    conn: Connection, size: int, replay: Replay, findings: Findings, progress: Progress | None
) -> None:
    columns = [
        entry_table.c.idx,
        entry_table.c.entry,
        entry_table.c.leaf_hash,
        entry_table.c.tree_root,
        *(entry_table.c[name] for name in QUERY_COLUMNS),
    ]
    after = -1
    while not replay.failed:
        rows = conn.execute(
            select(*columns)
            .where(entry_table.c.idx > after, entry_table.c.idx < size)
            .order_by(entry_table.c.idx)
            .limit(ENTRY_CHUNK)
        ).all()
        if not rows:
            return
        first, last = rows[0].idx, rows[-1].idx
        stored_nodes = _stored_nodes(conn, first, last)
        stored_parties = _stored_parties(conn, first, last)
        for row in rows:
            index = row.idx
            if index != replay.size:
                replay.fail(replay.size, f"entry {replay.size} is missing (deleted)")
                return
            entry = row.entry.encode("utf-8")
            try:
                document, canonical = parse_canonical(entry)
            except ValueError:
                document, canonical = None, False
            # One parse serves the canonical check and the query columns' check.
            canonical = canonical and isinstance(document, dict)
            completed = replay.add(entry, row.leaf_hash, row.tree_root, canonical)
            if completed is None or not isinstance(document, dict):
                return
            derived = tuple(query_columns(document).values())
            stored_columns = tuple(row[4:])
            if stored_columns != derived:
                for name, stored, expected in zip(
                    QUERY_COLUMNS, stored_columns, derived, strict=True
                ):
                    if stored != expected:
                        findings.bad(
                            index,
                            f"entry {index}: the stored column {name} is {stored!r}, "
                            f"but the entry says {expected!r}",
                        )
            if stored_parties.get(index, set()) != parties(document):
                findings.bad(index, f"entry {index}: the stored parties differ from the entry's")
            for level, node_index, node in completed[1:]:
                stored = stored_nodes.get((level, node_index))
                if stored != node:
                    state = "missing" if stored is None else "wrong"
                    findings.bad(
                        node_index << level,
                        f"stored tree node (level {level}, index {node_index}) is {state}",
                    )
        after = last
        if progress is not None:
            progress(replay.size, size)


def _count(conn: Connection, table: Table, condition: ColumnElement[bool]) -> int:
    return conn.execute(select(func.count()).select_from(table).where(condition)).scalar_one()


def _check_rows_beyond(conn: Connection, size: int, findings: Findings) -> None:
    """Rows outside the log: past its committed size (inserted, or left behind by a
    truncation), or at places no entry can have (negative indices, leaf-level nodes)."""
    extra_entries = _count(conn, entry_table, entry_table.c.idx >= size)
    if extra_entries:
        findings.bad(size, f"{extra_entries} entries lie beyond the log's size {size} (inserted)")
    extra_parties = _count(conn, party_table, party_table.c.idx >= size)
    # A node of level l is in the tree of ``size`` leaves when its index is below size >> l.
    extra_nodes = _count(
        conn, node_table, node_table.c.idx >= literal(size).op(">>")(node_table.c.level)
    )
    if extra_nodes or extra_parties:
        findings.bad(
            size,
            f"rows for entries beyond the log's size {size} remain ({extra_nodes} tree nodes, "
            f"{extra_parties} party rows): the log was truncated or rows were inserted",
        )
    foreign = (
        _count(conn, entry_table, entry_table.c.idx < 0)
        + _count(conn, party_table, party_table.c.idx < 0)
        + _count(conn, node_table, or_(node_table.c.idx < 0, node_table.c.level < 1))
    )
    if foreign:
        findings.bad(None, f"{foreign} rows at negative indices or levels were inserted")


def _check_checkpoint_consistency(
    conn: Connection, signed: Mapping[int, bytes], findings: Findings
) -> None:
    """Each signed checkpoint is provably consistent with the one before, by a proof built
    from the stored nodes, as a regulator would be sent it.

    Both roots already matched the replayed entries, so a failure here can only mean stored
    nodes are wrong; the node check names their entries, so no index is given here.
    """
    sizes = sorted(size for size in signed if size > 0)
    for old_size, new_size in pairwise(sizes):
        try:
            proof = span_hashes(conn, consistency_spans(old_size, new_size))
        except LedgerIntegrityError as exc:
            findings.bad(None, f"consistency proof from size {old_size} to {new_size}: {exc}")
            continue
        if not verify_consistency(old_size, new_size, signed[old_size], signed[new_size], proof):
            findings.bad(
                None,
                f"the consistency proof from size {old_size} to {new_size}, built from the "
                "stored nodes, fails: stored nodes are wrong",
            )
