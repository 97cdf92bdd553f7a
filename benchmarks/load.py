"""Load on the sandbox service over loopback: concurrent audit queries and job filings.

    python -m benchmarks.load                       # 32 clients for 60 s
    python -m benchmarks.load --clients 32 --seconds 60 --max-requests 200000

A real `sandbox serve` (uvicorn) on a free port of 127.0.0.1 over a fresh home; each client
is a thread with its own HTTP connection and its own token, and loops until the time or the
request budget is spent: a regulator's filtered audit listing, one entry with its inclusion
proof, the latest checkpoint, and (one request in four) an engineer's job filing. Every
request is decided by the policy and recorded in the ledger, so the run is also a test of
concurrent ledger writers. Reported: throughput, p50 and p99 latency per kind, errors
(anything but the expected status, and transport failures), and whether the ledger is
gapless and verifies afterwards. Writes benchmarks/results/load.json and load.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import add_quick_flag, isolated_home, machine, write_results
from sandbox.services import companies as company_service
from sandbox.services import principals as principal_service

PROJECT = Path(__file__).resolve().parents[1]
PURPOSE = "income-prediction"
INDUSTRIES = ["Construction", "Retail trade", "Transportation", "Education"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class World:
    url: str
    companies: list[str]
    engineer_tokens: list[str]
    regulator_tokens: list[str]
    home: Path


def prepare(home: Path, clients: int) -> tuple[list[str], list[str], list[str]]:
    """Companies, an engineer and a regulator, and a token per client and role."""
    from policies.facts import OperatorFacts
    from sandbox import identity
    from sandbox.config import load_settings
    from sandbox.data import census
    from sandbox.governance import get_governance
    from sandbox.vocabulary import OPERATOR_ID

    settings = load_settings()
    gov = get_governance(settings)
    companies = []
    for industry in INDUSTRIES:
        company = census.slug(industry)
        company_service.join(
            gov,
            settings.company_dir(company),
            company,
            industry,
            census.company_table(industry, rows=100, seed=0),
            (PURPOSE,),
        )
        companies.append(company)
    for principal, role in (("eve", "engineer"), ("reg", "regulator")):
        key = identity.generate_key()
        principal_service.register_principal(
            gov, OperatorFacts(OPERATOR_ID), principal, role, identity.public_b64(key)
        )
    engineers = [
        principal_service.issue_token_locally(gov, "engineer", "eve").token for _ in range(clients)
    ]
    regulators = [
        principal_service.issue_token_locally(gov, "regulator", "reg").token for _ in range(clients)
    ]
    return companies, engineers, regulators


@contextmanager
def serve(home: Path) -> Iterator[str]:
    """`sandbox serve` in its own process group, up within a bounded wait, always stopped."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]),
    }
    log = open(home / "server.log", "wb")  # noqa: SIM115 - kept open for the server's life
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
            if process.poll() is not None:
                raise RuntimeError(
                    f"the server exited: {(home / 'server.log').read_text()[-2000:]}"
                )
        else:
            raise RuntimeError("the server did not come up within 120 s")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        log.close()


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, seconds: float, problem: str | None) -> None:
        with self.lock:
            self.latencies.setdefault(kind, []).append(seconds)
            if problem is not None and len(self.errors) < 50:
                self.errors.append(problem)
            elif problem is not None:
                self.errors.append("")


def client_loop(
    world: World, number: int, stop_at: float, budget: threading.Semaphore, tally: Tally
) -> None:
    regulator = {"Authorization": f"Bearer {world.regulator_tokens[number]}"}
    engineer = {"Authorization": f"Bearer {world.engineer_tokens[number]}"}
    spec = {
        "purpose": PURPOSE,
        "companies": world.companies[:3],
        "rounds": 2,
        "min_participants": 2,
        "privacy": {"dp": {"epsilon": 2.0}},
    }
    step = 0
    with httpx.Client(base_url=world.url, timeout=30) as http:
        while time.monotonic() < stop_at and budget.acquire(blocking=False):
            step += 1
            if step % 4 == 0:
                kind, call, expect = (
                    "file job",
                    lambda: http.post("/jobs", json=spec, headers=engineer),
                    201,
                )
            elif step % 4 == 1:
                company = world.companies[step % len(world.companies)]
                kind, call, expect = (
                    "audit listing",
                    lambda c=company: http.get(
                        "/audit/entries", params={"company": c, "limit": 50}, headers=regulator
                    ),
                    200,
                )
            elif step % 4 == 2:
                kind, call, expect = (
                    "entry with proof",
                    lambda index=(number * 7 + step) % 20: http.get(
                        f"/audit/entries/{index}", headers=regulator
                    ),
                    200,
                )
            else:
                kind, call, expect = (
                    "checkpoint",
                    lambda: http.get("/audit/checkpoint", headers=regulator),
                    200,
                )
            started = time.perf_counter()
            try:
                response = call()
                problem = (
                    None
                    if response.status_code == expect
                    else f"{kind}: {response.status_code} {response.text[:200]}"
                )
            except httpx.HTTPError as exc:
                problem = f"{kind}: {type(exc).__name__}: {exc}"
            tally.add(kind, time.perf_counter() - started, problem)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(clients: int, seconds: float, max_requests: int) -> dict[str, Any]:
    with isolated_home("load") as home:
        companies, engineers, regulators = prepare(home, clients)
        with serve(home) as url:
            world = World(url, companies, engineers, regulators, home)
            tally = Tally()
            budget = threading.Semaphore(max_requests)
            started = time.monotonic()
            stop_at = started + seconds
            threads = [
                threading.Thread(
                    target=client_loop, args=(world, n, stop_at, budget, tally), daemon=True
                )
                for n in range(clients)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=seconds + 120)
            elapsed = time.monotonic() - started
        from sandbox.config import load_settings
        from sandbox.db import dispose_engines
        from sandbox.governance import get_governance

        dispose_engines()
        ledger = get_governance(load_settings()).ledger
        report = ledger.verify()
        indices = [e.index for e in ledger.iter_entries()]
        gapless = indices == list(range(len(indices)))
    requests = sum(len(v) for v in tally.latencies.values())
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": requests,
        "throughput_per_s": round(requests / elapsed, 1),
        "errors": len(tally.errors),
        "error_samples": [e for e in tally.errors if e][:10],
        "kinds": {
            kind: {
                "requests": len(values),
                "p50_ms": round(1000 * statistics.median(values), 1),
                "p99_ms": round(1000 * percentile(values, 0.99), 1),
            }
            for kind, values in sorted(tally.latencies.items())
        },
        "all": {
            "p50_ms": round(
                1000 * statistics.median([v for vs in tally.latencies.values() for v in vs]), 1
            ),
            "p99_ms": round(
                1000 * percentile([v for vs in tally.latencies.values() for v in vs], 0.99), 1
            ),
        },
        "ledger": {"entries": len(indices), "gapless": gapless, "verifies": report.ok},
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['clients']} clients over loopback for {result['seconds']} s: {result['requests']} requests, "
        f"{result['throughput_per_s']} per second, {result['errors']} errors; the ledger holds "
        f"{result['ledger']['entries']} entries, gapless: {result['ledger']['gapless']}, "
        f"verifies: {result['ledger']['verifies']}.",
        "",
        "| request | count | p50 (ms) | p99 (ms) |",
        "|---|---|---|---|",
    ]
    for kind, figures in result["kinds"].items():
        lines.append(
            f"| {kind} | {figures['requests']} | {figures['p50_ms']} | {figures['p99_ms']} |"
        )
    lines.append(
        f"| all | {result['requests']} | {result['all']['p50_ms']} | {result['all']['p99_ms']} |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-requests", type=int, default=200_000)
    add_quick_flag(parser)
    args = parser.parse_args()
    if args.quick:
        args.clients, args.seconds = 4, 3.0
    started = machine()
    result = run(args.clients, args.seconds, args.max_requests)
    text = table(result)
    paths = write_results("load", {"machine": started, **result}, text)
    print(text)
    print(json.dumps(result["error_samples"], indent=2))
    print(f"wrote {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
