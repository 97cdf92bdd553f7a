"""Job runs started over the API, each in its own worker process.

A run is the coordinator on Flower's simulation engine (Ray), which takes gigabytes and
minutes; a worker process keeps it apart from the API's threads, and can be ended with
everything it started (its own process group, which Ray's processes share). At most
``capacity`` runs at once per server; more are refused, not queued. Progress is read from the
registry (the rounds the coordinator records), so the same holds for any engine.

When a worker ends without the job having ended (killed, out of memory), the job is marked
failed with that cause; when the server shuts down, running jobs are stopped and marked
``stopped``, from which they can be started again (the coordinator resumes after the last
completed round).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from sandbox.config import Settings
from sandbox.db import get_engine
from sandbox.errors import Conflict
from sandbox.services import runs

log = logging.getLogger(__name__)

SHUTDOWN = "the API server shut down during the run; start the job again to resume"

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class JobRuns:
    def __init__(self, settings: Settings, capacity: int = 1, stop_timeout: float = 15.0):
        self.settings = settings
        self.capacity = capacity
        self.stop_timeout = stop_timeout
        self._lock = threading.Lock()
        self._active: dict[str, subprocess.Popen[bytes]] = {}
        self._stopping = False

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SANDBOX_HOME"] = str(self.settings.home)
        env["SANDBOX_DATABASE_URL"] = self.settings.database_url
        env["SANDBOX_LEDGER_ORIGIN"] = self.settings.ledger_origin
        paths = [str(PROJECT_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        return env

    def launch(self, job_id: str) -> None:
        """Start ``job_id`` in a worker process; Conflict when the server is at capacity."""
        with self._lock:
            if self._stopping:
                raise Conflict("the server is shutting down; start the job again later")
            if job_id in self._active:
                raise Conflict(f"job {job_id} is running on this server already")
            if len(self._active) >= self.capacity:
                busy = ", ".join(sorted(self._active)) or "nothing (it starts no runs)"
                raise Conflict(
                    f"this server runs at most {self.capacity} job(s) at a time and is running "
                    f"{busy}; start {job_id} again later or on another server"
                )
            log_dir = self.settings.runs_dir / job_id
            log_dir.mkdir(parents=True, exist_ok=True)
            with open(log_dir / "worker.log", "ab") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "sandbox.runtime.worker", job_id],
                    env=self._environment(),
                    cwd=str(self.settings.home),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self._active[job_id] = process
        threading.Thread(
            target=self._watch, args=(job_id, process), name=f"watch-{job_id}", daemon=True
        ).start()

    def is_running(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._active

    def _watch(self, job_id: str, process: subprocess.Popen[bytes]) -> None:
        code = process.wait()
        with self._lock:
            self._active.pop(job_id, None)
            stopping = self._stopping
        try:
            engine = get_engine(self.settings.database_url)
            if stopping:
                runs.stop(engine, job_id, SHUTDOWN)
            else:
                runs.fail(
                    engine,
                    job_id,
                    f"the run's worker process ended unexpectedly (exit code {code})",
                )
        except Exception:
            log.exception("could not settle the status of job %s after its run", job_id)

    def stop_all(self) -> None:
        """End every run this server started (their whole process groups) and wait for them."""
        with self._lock:
            self._stopping = True
            running = dict(self._active)
        for process in running.values():
            _signal_group(process, signal.SIGTERM)
        for job_id, process in running.items():
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("run of job %s did not stop in time; killing it", job_id)
                _signal_group(process, signal.SIGKILL)
                process.wait()
        for job_id in running:
            self._settle_stopped(job_id)

    def _settle_stopped(self, job_id: str) -> None:
        try:
            runs.stop(get_engine(self.settings.database_url), job_id, SHUTDOWN)
        except Exception:
            log.exception("could not mark job %s stopped", job_id)


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
