"""Start a filed job on a running federation and follow it to its end.

The start is the services' (decided and recorded, :func:`sandbox.services.runs.start_job`);
its launcher is ``flwr run``, which only submits; the run's fate comes from ``flwr list --run-id`` (it exits 0 even
when a run failed), and the job's own fate from the registry: the coordinator records a job
it had to stop (too few participants) as ``stopped`` while Flower calls the run completed.
A run is a success only when both say completed. Progress comes from the rounds the
coordinator writes to the database.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.governance import Governance
from sandbox.registry.models import Round
from sandbox.runtime.federation import APP_DIR
from sandbox.runtime.federation.commands import FederationError
from sandbox.runtime.federation.flwr_cli import FlwrCli, FlwrError, RunStatus
from sandbox.services import runs

STOP_WAIT_S = 60.0


@dataclass(frozen=True)
class RunOutcome:
    job_id: str
    run_id: str
    flower_status: str
    flower_details: str
    job_status: str
    job_reason: str | None
    seconds: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.flower_status == "finished:completed" and self.job_status == "completed"


def run_job(
    gov: Governance,
    actor: Any,
    cli: FlwrCli,
    job_id: str,
    timeout: float,
    app_dir: Path = APP_DIR,
    poll_s: float = 2.0,
    on_round: Callable[[Round], None] = lambda _: None,
    on_status: Callable[[str], None] = lambda _: None,
) -> RunOutcome:
    """Start ``job_id`` (as ``actor``) on the SuperLink behind ``cli`` and wait (at most
    ``timeout`` seconds) until it ends; a run still going then is stopped."""
    engine = gov.engine
    job = runs.job(engine, job_id)
    if job.bundle_hash is None:
        raise FederationError(
            f"job {job_id} has no filed code bundle; company nodes run filed code only"
        )
    started = time.monotonic()
    submitted: list[str] = []
    runs.start_job(
        gov, actor, job_id, launch=lambda j: submitted.append(cli.run(app_dir, {"job-id": j}))
    )
    run_id = submitted[0]
    on_status(f"run {run_id} submitted")
    reported = {r.number for r in runs.rounds(engine, job_id)}
    timed_out = False
    last = ""
    while True:
        try:
            state: RunStatus | None = cli.status(run_id)
        except FlwrError:
            state = None  # a transient failure of the CLI; the deadline bounds the retries
        for record in runs.rounds(engine, job_id):
            if record.number not in reported:
                reported.add(record.number)
                on_round(record)
        if state is not None and state.status != last:
            last = state.status
            on_status(f"run {run_id}: {state.status}")
        if state is not None and state.finished:
            break
        if time.monotonic() - started > timeout:
            timed_out = True
            stop_deadline = time.monotonic() + STOP_WAIT_S
            try:
                cli.stop(run_id)
                while time.monotonic() < stop_deadline:
                    state = cli.status(run_id)
                    if state.finished:
                        break
                    time.sleep(poll_s)
            except FlwrError as exc:
                on_status(f"run {run_id}: could not be stopped cleanly ({exc})")
            break
        time.sleep(poll_s)
    job = runs.job(engine, job_id)
    return RunOutcome(
        job_id=job_id,
        run_id=run_id,
        flower_status=state.status if state is not None else "unknown",
        flower_details=state.details if state is not None else "",
        job_status=job.status,
        job_reason=job.status_reason,
        seconds=round(time.monotonic() - started, 1),
        timed_out=timed_out,
    )
