"""Benchmarks that cannot rot: every benchmark program runs in its quick mode here, writing
its results into a temporary folder, so that a benchmark that no longer runs fails the suite.

The figures of a quick run mean nothing (tiny sizes); what is checked is that the program ran
to the end and wrote its JSON and table stamped with the commit and the machine's load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"

# Modules under benchmarks/ that run as programs but are helpers of other benchmarks (a drill's
# child process), not benchmarks with results of their own.
HELPERS = {"ledger_drills"}

# Each benchmark program, the results file it writes and the marks its quick run needs.
QUICK_RUNS = {
    "policy": ("policy", ()),
    "ledger": ("ledger", ()),
    "witnessing": ("witnessing", ()),
    "load": ("load", ()),
    "reliability": ("reliability", ()),
    "startup": ("startup", ()),
    "contribution": ("contribution", (pytest.mark.slow,)),
    "overhead": ("overhead", (pytest.mark.slow,)),
    "privacy": ("privacy", (pytest.mark.slow,)),
    "scale": ("scale", (pytest.mark.slow,)),
    "utility": ("utility", (pytest.mark.slow,)),
    "release": ("release", (pytest.mark.slow,)),
    "deployment": ("deployment", (pytest.mark.deployment,)),
}


def benchmark_programs() -> set[str]:
    return {
        path.stem
        for path in BENCHMARKS.glob("*.py")
        if 'if __name__ == "__main__":' in path.read_text() and path.stem not in HELPERS
    }


def test_every_benchmark_program_has_a_quick_run_here() -> None:
    assert benchmark_programs() == set(QUICK_RUNS)


@pytest.mark.parametrize(
    "module",
    [pytest.param(name, marks=marks) for name, (_, marks) in QUICK_RUNS.items()],
)
def test_the_benchmark_runs_in_its_quick_mode(module: str, tmp_path: Path) -> None:
    results = tmp_path / "results"
    env = dict(
        os.environ,
        SANDBOX_BENCHMARK_RESULTS=str(results),
        SANDBOX_HOME=str(tmp_path / "home"),
        PYTHONPATH=str(ROOT),
    )
    env.pop("SANDBOX_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", "--quick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    name = QUICK_RUNS[module][0]
    document = json.loads((results / f"{name}.json").read_text())
    provenance = document["provenance"]
    assert len(provenance["commit"].split("-")[0]) == 40 or provenance["commit"] == "unknown"
    assert len(provenance["loadavg_after"]) == 3
    table = (results / f"{name}.md").read_text()
    assert table.strip().splitlines()[-1].startswith(f"Commit `{provenance['commit']}`"), table
    assert len(table.strip().splitlines()) > 2, "the table has figures above its provenance"
    assert len(provenance["loadavg_before"]) == 3, "the load before the run was recorded"
