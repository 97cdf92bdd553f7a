"""The ServerApp. Under the deployment engine the job id arrives in the run config
(``job-id``); in simulation the federation builds the app for one job directly."""

from __future__ import annotations

import contextlib

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from coordinator.runner import JobRunner, JobStopped, Progress, ReplyObserver
from sandbox.config import load_settings
from sandbox.db import get_engine
from sandbox.governance import get_governance


def build_server_app(
    job_id: str | None = None,
    progress: Progress | None = None,
    observer: ReplyObserver | None = None,
    governed: bool = True,
) -> ServerApp:
    """The ServerApp for one job (or, with ``job_id`` None, the job named in the run config).

    ``governed=False`` runs the same rounds without decisions, receipts or ledger; only the
    benchmarks that measure what governance costs, and the learning engine alone, use it."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        target = job_id or str(context.run_config.get("job-id", ""))
        if not target:
            raise ValueError("the run config names no job-id")
        settings = load_settings()
        engine = get_engine(settings.database_url)
        governance = get_governance(settings) if governed else None
        runner = JobRunner(
            settings,
            engine,
            grid,
            target,
            progress=progress,
            observer=observer,
            governance=governance,
        )
        # A stop and its reason are recorded by the runner; the run itself ended as designed.
        with contextlib.suppress(JobStopped):
            runner.run()

    return app


app = build_server_app()
