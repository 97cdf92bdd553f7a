"""Helpers shared by the benchmark scripts: isolated homes, machine facts, result files."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Where results go: the committed folder, or elsewhere for a quick run (the test suite runs
# every benchmark's quick mode with this set, so that a benchmark that no longer runs fails CI).
RESULTS = Path(
    os.environ.get("SANDBOX_BENCHMARK_RESULTS") or Path(__file__).resolve().parent / "results"
)
ROOT = Path(__file__).resolve().parent.parent


def loadavg() -> list[float]:
    """The machine's 1, 5 and 15-minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def commit() -> str:
    """The commit the measured code comes from, marked ``-dirty`` when the tree has changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def machine() -> dict[str, Any]:
    """Facts about the run, taken when it starts: the load before it is among them."""
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "loadavg_before": loadavg(),
    }


@contextmanager
def isolated_home(prefix: str) -> Iterator[Path]:
    """A throwaway SANDBOX_HOME with its own SQLite database, for one measurement."""
    from sandbox.db import dispose_engines

    old = {k: os.environ.get(k) for k in ("SANDBOX_HOME", "SANDBOX_DATABASE_URL")}
    with tempfile.TemporaryDirectory(prefix=f"sandbox-bench-{prefix}-") as folder:
        os.environ["SANDBOX_HOME"] = folder
        os.environ.pop("SANDBOX_DATABASE_URL", None)
        try:
            yield Path(folder)
        finally:
            dispose_engines()
            for key, value in old.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def add_quick_flag(parser: argparse.ArgumentParser) -> None:
    """``--quick``: the benchmark's smoke run at small sizes, which the test suite makes
    (``tests/benchmarks/test_quick_runs.py``) so that a benchmark that no longer runs fails."""
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run the tests make"
    )


def write_results(
    name: str, document: dict[str, Any], table: str, out: Path | None = None
) -> tuple[Path, Path]:
    """Write ``name``.json and ``name``.md, each stamped with the commit and the machine's
    load before (from ``document["machine"]`` when the run recorded it) and after."""
    folder = out or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    recorded = document.get("machine")
    started: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    provenance = {
        "commit": started.get("commit") or commit(),
        "loadavg_before": started.get("loadavg_before"),
        "loadavg_after": loadavg(),
    }
    json_path = folder / f"{name}.json"
    md_path = folder / f"{name}.md"
    json_path.write_text(json.dumps({**document, "provenance": provenance}, indent=2) + "\n")
    md_path.write_text(
        table.rstrip()
        + f"\n\nCommit `{provenance['commit']}`; load average {provenance['loadavg_before']}"
        + f" before, {provenance['loadavg_after']} after.\n"
    )
    return json_path, md_path


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_mib(root: int | None = None) -> float:
    """Resident memory of a process and all its descendants (Ray's workers included), MiB."""
    stack, seen, total = [root or os.getpid()], set(), 0
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _rss_kib(pid)
        stack.extend(_children(pid))
    return total / 1024


class PeakMemory:
    """Samples ``tree_rss_mib`` in a background thread; ``peak`` is the largest sample."""

    def __init__(self, interval_s: float = 0.5):
        import threading

        self.interval_s = interval_s
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_mib())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak = max(self.peak, tree_rss_mib())


def onboard_census(
    settings: Any,
    engine: Any,
    industries: list[str],
    rows: int | None,
    seed: int,
    purposes: tuple[str, ...],
) -> list[str]:
    """One census company per industry joins (through the services, as in the product);
    returns the ids."""
    from sandbox.data import census
    from sandbox.governance import get_governance
    from sandbox.services.companies import join

    gov = get_governance(settings)
    ids = []
    for industry in industries:
        company = census.slug(industry)
        join(
            gov,
            settings.company_dir(company),
            company,
            industry,
            census.company_table(industry, rows=rows, seed=seed),
            purposes=purposes,
            seed=seed,
        )
        ids.append(company)
    return ids


def run_bare_or_governed(settings: Any, job_id: str, governed: bool, progress: Any) -> Any:
    """Run a filed job on the simulation engine, under governance (started through the
    services, as the CLI does) or bare (the same learning, DP and SecAgg+, with no
    decisions, gates, receipts or ledger): the two arms that the overhead and scale
    benchmarks set side by side."""
    from sandbox.runtime.bare import run_bare
    from sandbox.runtime.simulation import run_on_simulation

    if governed:
        return run_on_simulation(settings, job_id, progress=progress)
    return run_bare(settings, [job_id], progress=progress)[job_id]


def file_bare(engine: Any, spec: Any, filed_by: str = "engineer") -> str:
    """File a job for the bare arm: admitted without the policy engine (benchmarks only)."""
    from sandbox.services.bare import file_unreviewed

    return file_unreviewed(engine, spec, filed_by).id
