"""Benchmark of the audit ledger: append rate, full verification, proofs at a million entries.

Writes ``benchmarks/results/ledger.json`` and ``benchmarks/results/ledger.md``. Every timing
is the median of several repetitions (``--repetitions``); the million-entry log is built once
through ``Ledger.append_many`` (the same tree code as every append) in large batches.

    python -m benchmarks.ledger                 # the full run (about 1 GiB of disk, minutes)
    python -m benchmarks.ledger --quick         # a smoke run with small sizes
    python -m benchmarks.ledger --postgres postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from benchmarks.common import RESULTS, add_quick_flag, machine, write_results
from sandbox.db import dispose_engines, get_engine
from sandbox.ledger import (
    Actor,
    DecisionRef,
    Ledger,
    LedgerRecord,
    Purpose,
    Resource,
    verify_bundle,
    verify_checkpoint,
    verify_consistency,
    verify_inclusion,
)

ORIGIN = "bench.example/ledger"
COMPANIES = ("acme-bank", "zeta-health", "orbit-retail", "nova-insure")
START = datetime(2025, 1, 1, tzinfo=UTC)

TARGETS = {
    "append_batched_per_s": (">=", 3000),
    "append_batched_checkpointed_per_s": (">=", 3000),
    "verify_100k_s": ("<", 5.0),
    "inclusion_verify_1m_ms": ("<", 1.0),
}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_record(number: int) -> LedgerRecord:
    """A policy decision about one company's dataset, as the policy engine records it."""
    owner = COMPANIES[number % len(COMPANIES)]
    return LedgerRecord(
        record_id=f"bench-{number}",
        time=START + timedelta(milliseconds=number),
        action="dataset.read",
        actor=Actor(principal=f"engineer:e{number % 50}", role="engineer", organisation="lab"),
        resource=Resource(
            kind="dataset",
            id=f"{owner}/main",
            owner=owner,
            content_hash=_digest(owner),
            grade="important",
        ),
        purpose=Purpose(name="credit-risk", legal_basis="consent", consent_id=f"c-{owner}"),
        decision=DecisionRef(
            decision_id=f"d-{number}",
            allowed=number % 5 != 0,
            policies=["consent-covers-purpose"],
            policy_set_hash=_digest("policies"),
        ),
        job_id=f"job-{number % 100}",
        correlation_id=f"c-{number}",
    )


def median(values: list[float]) -> float:
    return statistics.median(values)


@contextmanager
def fresh_database(url_for: Callable[[Path], str]) -> Iterator[Ledger]:
    folder = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    try:
        yield Ledger(
            get_engine(url_for(folder)),
            Ed25519PrivateKey.generate(),
            ORIGIN,
            folder / "signer.json",
        )
    finally:
        dispose_engines()
        shutil.rmtree(folder, ignore_errors=True)


def sqlite_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'ledger.db'}"


def postgres_url_factory(admin_url: str) -> Callable[[Path], str]:
    """A new database per use on the given server (dropped when the run ends)."""
    import psycopg
    from sqlalchemy.engine import make_url

    created: list[str] = []

    def url_for(_folder: Path) -> str:
        name = f"ledger_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return make_url(admin_url).set(database=name).render_as_string(hide_password=False)

    def drop_all() -> None:
        dispose_engines()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            for name in created:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    url_for.drop_all = drop_all  # type: ignore[attr-defined]
    return url_for


def bench_appends(
    url_for: Callable[[Path], str], single: int, batches: int, batch: int, repetitions: int
) -> dict[str, Any]:
    single_rates: list[float] = []
    batched_rates: list[float] = []
    signed_rates: list[float] = []
    for _ in range(repetitions):
        with fresh_database(url_for) as ledger:
            records = [make_record(i) for i in range(single)]
            started = time.perf_counter()
            for record in records:
                ledger.append(record)
            single_rates.append(single / (time.perf_counter() - started))
        with fresh_database(url_for) as ledger:
            groups = [[make_record(b * batch + i) for i in range(batch)] for b in range(batches)]
            started = time.perf_counter()
            for group in groups:
                ledger.append_many(group)
            batched_rates.append(batches * batch / (time.perf_counter() - started))
        with fresh_database(url_for) as ledger:
            # The signer's worst case: a checkpoint after every batch, each one growing the
            # signer's own tree from the entries and writing its state file (fsynced).
            groups = [[make_record(b * batch + i) for i in range(batch)] for b in range(batches)]
            started = time.perf_counter()
            for group in groups:
                ledger.append_many(group)
                ledger.checkpoint()
            signed_rates.append(batches * batch / (time.perf_counter() - started))
    return {
        "append_single_per_s": median(single_rates),
        "append_single_runs": single_rates,
        "append_batched_per_s": median(batched_rates),
        "append_batched_runs": batched_rates,
        "append_batched_checkpointed_per_s": median(signed_rates),
        "append_batched_checkpointed_runs": signed_rates,
        "single_appends_per_run": single,
        "batch_size": batch,
        "batched_appends_per_run": batches * batch,
    }


def build(ledger: Ledger, size: int, batch: int, checkpoint_every: int) -> float:
    """Append ``size`` records in batches, signing a checkpoint every ``checkpoint_every``."""
    started = time.perf_counter()
    for first in range(ledger.size, size, batch):
        ledger.append_many([make_record(n) for n in range(first, min(first + batch, size))])
        if (first + batch) % checkpoint_every == 0:
            ledger.checkpoint()
    ledger.checkpoint()
    return time.perf_counter() - started


def bench_verification(size: int, repetitions: int) -> dict[str, Any]:
    with fresh_database(sqlite_url) as ledger:
        build(ledger, size, batch=5_000, checkpoint_every=10_000)
        database_runs, database_cpu, bundle_runs = [], [], []
        for _ in range(repetitions):
            started, cpu = time.perf_counter(), time.process_time()
            report = ledger.verify()
            database_runs.append(time.perf_counter() - started)
            database_cpu.append(time.process_time() - cpu)
            assert report.ok and report.attested_size == size, report.problems
        bundle = Path(tempfile.mkdtemp(prefix="ledger-bundle-")) / "bundle"
        try:
            started = time.perf_counter()
            ledger.export_bundle(bundle)
            export_seconds = time.perf_counter() - started
            for _ in range(repetitions):
                started = time.perf_counter()
                report = verify_bundle(bundle, ledger.public_key_b64)
                bundle_runs.append(time.perf_counter() - started)
                assert report.ok, report.problems
        finally:
            shutil.rmtree(bundle.parent, ignore_errors=True)
    return {
        "verify_entries": size,
        "verify_100k_s": median(database_runs),
        "verify_runs": database_runs,
        "verify_100k_cpu_s": median(database_cpu),
        "export_bundle_s": export_seconds,
        "verify_bundle_100k_s": median(bundle_runs),
        "verify_bundle_runs": bundle_runs,
    }


def _per_call_ms(calls: list[Callable[[], object]], repetitions: int) -> list[float]:
    """Median over repetitions of the mean time per call, in ms."""
    runs = []
    for _ in range(repetitions):
        started = time.perf_counter()
        for call in calls:
            call()
        runs.append((time.perf_counter() - started) / len(calls) * 1000)
    return runs


def bench_million(size: int, repetitions: int, full_verify: bool) -> dict[str, Any]:
    rng = random.Random(6962)
    with fresh_database(sqlite_url) as ledger:
        build_seconds = build(ledger, size, batch=10_000, checkpoint_every=100_000)
        database = Path(ledger.engine.url.database or "")
        head = verify_checkpoint(ledger.latest_checkpoint().note, ledger.public_key_b64)
        assert head.size == size

        indices = [rng.randrange(size) for _ in range(200)]
        generation_runs = _per_call_ms(
            [lambda i=i: ledger.inclusion_proof(i, size) for i in indices], repetitions
        )
        proofs = [ledger.inclusion_proof(i, size) for i in indices]
        for proof in proofs:
            assert proof.verify(head.root)
        lengths = [len(proof.hashes) for proof in proofs]
        verify_runs = _per_call_ms(
            [
                lambda p=p: verify_inclusion(p.leaf_hash, p.index, size, p.hashes, head.root)
                for p in proofs
            ]
            * 5,
            repetitions,
        )

        old_sizes = [rng.randrange(1, size) for _ in range(50)]
        consistency = [
            (old, ledger.root(old), ledger.consistency_proof(old, size)) for old in old_sizes
        ]
        consistency_runs = _per_call_ms(
            [
                lambda o=o, r=r, p=p: verify_consistency(o, size, r, head.root, p.hashes)
                for o, r, p in consistency
            ]
            * 20,
            repetitions,
        )
        assert all(p.verify(r, head.root) for _, r, p in consistency)
        checkpoint_runs = _per_call_ms(
            [lambda: verify_checkpoint(ledger.latest_checkpoint().note, ledger.public_key)] * 50,
            repetitions,
        )
        result: dict[str, Any] = {
            "big_entries": size,
            "build_s": build_seconds,
            "build_per_s": size / build_seconds,
            "database_bytes": database.stat().st_size if database.exists() else None,
            "inclusion_proof_hashes_median": median([float(n) for n in lengths]),
            "inclusion_proof_hashes_max": max(lengths),
            "inclusion_proof_bytes_max": 32 * max(lengths),
            "inclusion_generate_1m_ms": median(generation_runs),
            "inclusion_verify_1m_ms": median(verify_runs),
            "inclusion_verify_runs_ms": verify_runs,
            "consistency_proof_hashes_max": max(len(p.hashes) for _, _, p in consistency),
            "consistency_verify_1m_ms": median(consistency_runs),
            "checkpoint_verify_ms": median(checkpoint_runs),
        }
        if full_verify:
            started = time.perf_counter()
            report = ledger.verify()
            result["verify_1m_s"] = time.perf_counter() - started
            assert report.ok, report.problems
    return result


def environment() -> dict[str, Any]:
    """The common facts of a run (commit, load before) and the SQLite it measures."""
    return machine() | {"sqlite": sqlite3.sqlite_version, "arch": platform.machine()}


def markdown(results: dict[str, Any]) -> str:
    r = results["results"]

    def row(label: str, key: str, unit: str, digits: int = 1) -> str:
        value = r.get(key)
        if value is None:
            return ""
        target = TARGETS.get(key)
        shown_target = f"{target[0]} {target[1]}" if target else ""
        met = "" if target is None else ("yes" if results["met"][key] else "**no**")
        return f"| {label} | {value:,.{digits}f} {unit} | {shown_target} | {met} |\n"

    env = results["machine"]
    lines = (
        "# Ledger benchmark\n\n"
        f"Run {env['when']} on {env['cpus']} cores, Python {env['python']}, "
        f"SQLite {env['sqlite']}. Medians of {results['repetitions']} repetitions. The machine "
        "is shared with other work: wall times vary with its load (below).\n\n"
        "| measure | median | target | met |\n|---|---|---|---|\n"
        + row("single appends (SQLite, synced commits)", "append_single_per_s", "/s")
        + row("batched appends (SQLite, batches of 1,000)", "append_batched_per_s", "/s")
        + row(
            "batched appends, a checkpoint signed after each batch (SQLite)",
            "append_batched_checkpointed_per_s",
            "/s",
        )
        + row("single appends (Postgres)", "pg_append_single_per_s", "/s")
        + row("batched appends (Postgres, batches of 1,000)", "pg_append_batched_per_s", "/s")
        + row(
            "batched appends, a checkpoint after each batch (Postgres)",
            "pg_append_batched_checkpointed_per_s",
            "/s",
        )
        + row(f"full verification of {r['verify_entries']:,} entries", "verify_100k_s", "s", 2)
        + row("  of which CPU time of this process", "verify_100k_cpu_s", "s", 2)
        + row(
            f"bundle verification of {r['verify_entries']:,} entries",
            "verify_bundle_100k_s",
            "s",
            2,
        )
        + row(f"build of {r.get('big_entries', 0):,} entries (bulk batches)", "build_per_s", "/s")
        + row("inclusion proof size at the big size (max)", "inclusion_proof_bytes_max", "bytes", 0)
        + row("inclusion proof hashes (median)", "inclusion_proof_hashes_median", "", 0)
        + row("inclusion proof generation from the database", "inclusion_generate_1m_ms", "ms", 3)
        + row("inclusion proof verification", "inclusion_verify_1m_ms", "ms", 4)
        + row("consistency proof verification", "consistency_verify_1m_ms", "ms", 4)
        + row("checkpoint signature verification", "checkpoint_verify_ms", "ms", 3)
        + row("full verification of the big log", "verify_1m_s", "s", 1)
        + row("database file at the big size", "database_bytes", "bytes", 0)
    )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_quick_flag(parser)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--big", type=int, default=1_000_000, help="entries of the big log")
    parser.add_argument("--verify-size", type=int, default=100_000)
    parser.add_argument("--postgres", help="also measure appends on this Postgres (admin URL)")
    parser.add_argument("--skip-big-verify", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.big, args.verify_size, args.repetitions = 20_000, 5_000, 3

    started_in = environment()
    results: dict[str, Any] = {}
    print("appends on SQLite ...", flush=True)
    results |= bench_appends(sqlite_url, single=300, batches=10, batch=1_000,
                             repetitions=args.repetitions)  # fmt: skip
    if args.postgres:
        print("appends on Postgres ...", flush=True)
        url_for = postgres_url_factory(args.postgres)
        try:
            pg = bench_appends(url_for, single=300, batches=10, batch=1_000,
                               repetitions=args.repetitions)  # fmt: skip
        finally:
            url_for.drop_all()  # type: ignore[attr-defined]
        results |= {f"pg_{key}": value for key, value in pg.items()}
    print(f"verification of {args.verify_size:,} entries ...", flush=True)
    results |= bench_verification(args.verify_size, args.repetitions)
    print(f"a log of {args.big:,} entries ...", flush=True)
    results |= bench_million(args.big, args.repetitions, not args.skip_big_verify)

    met = {}
    for key, (relation, bound) in TARGETS.items():
        value = results[key]
        met[key] = value >= bound if relation == ">=" else value < bound
    document = {
        "machine": started_in,
        "repetitions": args.repetitions,
        "targets": {key: f"{relation} {bound}" for key, (relation, bound) in TARGETS.items()},
        "met": met,
        "results": results,
    }
    write_results("ledger", document, markdown(document), out=args.out)
    print(markdown(document))


if __name__ == "__main__":
    main()
