"""What starting a company's task process costs: the imports of the sandbox's node app against
a plain Flower ClientApp's, side by side.

    python -m benchmarks.startup [--repetitions 7] [--quick]

Each arm is a fresh Python process that imports its modules and exits, timed from outside
(wall clock), the arms alternating so that machine load hits both. Arms: the plain app
(``flwr.clientapp`` and ``torch``, what any PyTorch ClientApp imports), the sandbox's app as a
non-DP task loads it (``clients.app``), and as the warm spare loads it (``clients.app`` and
DP-SGD's Opacus). Writes benchmarks/results/startup.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks.common import ROOT, add_quick_flag, machine, write_results

ARMS = {
    "plain Flower ClientApp (flwr.clientapp, torch)": "import flwr.clientapp, torch",
    "sandbox node app (clients.app)": "import clients.app",
    "sandbox node app with Opacus (warm spare)": "import clients.app, sandbox.learning.dp",
}


def time_import(statement: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True, env=env, timeout=300)
    return time.perf_counter() - started


def measure(repetitions: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {name: [] for name in ARMS}
    for statement in ARMS.values():  # a first, unmeasured pass warms the page cache
        time_import(statement)
    for _ in range(repetitions):
        for name, statement in ARMS.items():
            samples[name].append(time_import(statement))
    plain = statistics.median(samples[next(iter(ARMS))])
    return {
        name: {
            "median_s": round(statistics.median(values), 3),
            "ratio_to_plain": round(statistics.median(values) / plain, 2),
            "samples_s": [round(v, 3) for v in values],
        }
        for name, values in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=7)
    add_quick_flag(parser)
    args = parser.parse_args()
    if args.quick:
        args.repetitions = 1
    started = machine()
    arms = measure(args.repetitions)
    lines = [
        "# Starting a task process: imports, side by side",
        "",
        f"Median of {args.repetitions} fresh processes per arm, arms alternating.",
        "",
        "| arm | seconds (median) | against the plain app |",
        "|---|---|---|",
        *(f"| {name} | {a['median_s']} | {a['ratio_to_plain']}x |" for name, a in arms.items()),
    ]
    table = "\n".join(lines)
    paths = write_results("startup", {"machine": started, "arms": arms}, table)
    print(table)
    print(f"\nwritten: {paths[0]}, {paths[1]}")


if __name__ == "__main__":
    main()
