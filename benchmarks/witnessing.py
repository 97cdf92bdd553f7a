"""Benchmark of witnessing: what the companies' nodes cosigning the ledger adds to a round.

One round's witnessing, end to end and in process: the ledger grows by the round's entries,
the coordinator signs a checkpoint and builds the consistency proofs it hands out
(:class:`coordinator.witnesses.WitnessRelay` does the same), every node's witness checks the
checkpoint and the proof and cosigns (C2SP add-checkpoint, with its state file written), and
the ledger stores every cosignature on the checkpoint's note. Measured at 23 and at 200
witnesses on SQLite, as medians over rounds; compared with the round times of
``benchmarks/results/scale.json`` when that file is present (same machine, other run).

    python -m benchmarks.witnessing            # writes benchmarks/results/witnessing.{json,md}
    python -m benchmarks.witnessing --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from benchmarks.common import RESULTS, add_quick_flag, write_results
from benchmarks.ledger import environment, make_record
from sandbox.db import dispose_engines, get_engine
from sandbox.identity import public_b64
from sandbox.ledger import Ledger
from sandbox.ledger.witness import Witness, WitnessKey, add_checkpoint_request

ORIGIN = "bench.example/ledger"
ENTRIES_PER_ROUND = 70  # a governed round's ledger entries at 23 companies (scale benchmark)


def one_round(ledger: Ledger, witnesses: list[tuple[Witness, WitnessKey]], start: int) -> float:
    """Seconds to witness one round: sign, prove, cosign at every node, store."""
    ledger.append_many([make_record(start + i) for i in range(ENTRIES_PER_ROUND)])
    began = time.perf_counter()
    head = ledger.checkpoint()
    proofs: dict[int, list[bytes]] = {}
    for witness, key in witnesses:
        held = witness.latest()
        size = 0 if held is None else held[0].size
        if size not in proofs:
            proofs[size] = list(ledger.consistency_proof(size, head.size).hashes) if size else []
        answer = witness.add_checkpoint(add_checkpoint_request(size, proofs[size], head.note))
        if answer.status != 200:
            raise RuntimeError(f"witness {key.name} answered {answer.status}: {answer.body}")
        ledger.add_cosignature(head.size, answer.body, key)
    return time.perf_counter() - began


def bench(count: int, rounds: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="witness-bench-"))
    ledger = Ledger(
        get_engine(f"sqlite:///{folder / 'ledger.db'}"),
        Ed25519PrivateKey.generate(),
        ORIGIN,
        folder / "signer.json",
    )
    witnesses = []
    for number in range(count):
        key = Ed25519PrivateKey.generate()
        name = f"company-{number}"
        witness = Witness(folder / "w" / name, name, key, ORIGIN, ledger.public_key_b64)
        witnesses.append((witness, WitnessKey(name, public_b64(key))))
    one_round(ledger, witnesses, 0)  # every witness's first checkpoint (old size 0)
    times = [one_round(ledger, witnesses, (r + 1) * ENTRIES_PER_ROUND) for r in range(rounds)]
    note = ledger.latest_checkpoint()
    dispose_engines()
    return {
        "witnesses": count,
        "rounds": rounds,
        "round_ms_median": statistics.median(times) * 1000,
        "round_ms_runs": [t * 1000 for t in times],
        "note_bytes": len(note.note.encode()) if note else 0,
    }


def scale_round_seconds() -> dict[int, float]:
    """Round times per company count from the scale benchmark's results, if present."""
    path = RESULTS / "scale.json"
    if not path.exists():
        return {}
    try:
        rows = json.loads(path.read_text())["sizes"]
        return {
            int(r["companies"]): float(r["median_seconds_per_round"])
            for r in rows
            if r.get("arm") == "governed"
        }
    except (ValueError, KeyError, TypeError):
        return {}


def markdown(document: dict[str, Any]) -> str:
    env = document["machine"]
    lines = [
        "# Witnessing benchmark\n",
        f"Run {env['when']} on {env['cpus']} cores. Medians over rounds; "
        "in process on SQLite: sign, prove, every node's witness checks and cosigns (state "
        "file written), every cosignature stored.\n",
        "| witnesses | witnessing per round | round time (scale benchmark) | share | note size |",
        "|---|---|---|---|---|",
    ]
    for row in document["results"]:
        round_s = row.get("round_s_scale")
        share = f"{row['round_ms_median'] / 10 / round_s:.1f}%" if round_s else "n/a"
        shown = f"{round_s:.1f} s" if round_s else "n/a"
        lines.append(
            f"| {row['witnesses']} | {row['round_ms_median']:.1f} ms | {shown} | {share} | "
            f"{row['note_bytes']:,} bytes |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_quick_flag(parser)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else 9
    started = environment()
    scale = scale_round_seconds()
    results = []
    for count in (23, 200):
        print(f"{count} witnesses ...", flush=True)
        row = bench(count, rounds)
        if count in scale:
            row["round_s_scale"] = scale[count]
        results.append(row)
    document = {
        "machine": started,
        "entries_per_round": ENTRIES_PER_ROUND,
        "results": results,
    }
    write_results("witnessing", document, markdown(document), out=args.out)
    print(markdown(document))


if __name__ == "__main__":
    main()
