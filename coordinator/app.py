"""The ServerApp. Under the deployment engine the job id arrives in the run config
(``job-id``); in simulation the composition code builds the app for its jobs directly (one
after another over the same company nodes)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from coordinator.context import JobStopped
from coordinator.messaging import Progress, ReplyObserver
from coordinator.polling import PromptGrid
from coordinator.runner import JobRunner
from sandbox.config import load_settings
from sandbox.db import get_engine
from sandbox.governance import get_governance


def build_server_app(
    job_id: str | Sequence[str] | None = None,
    progress: Progress | None = None,
    observer: ReplyObserver | None = None,
    governed: bool = True,
) -> ServerApp:
    """The ServerApp for its jobs (or, with ``job_id`` None, the job named in the run config).

    Governed (the product): every step's participants are decided by the policy engine, every
    reply must carry its company's signed receipt, and everything goes to the ledger.
    ``governed=False`` runs the same rounds without decisions, receipts or ledger; only the
    benchmarks that measure the learning engine alone, or what governance costs, use it."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if job_id is None:
            targets = [str(context.run_config.get("job-id", ""))]
        else:
            targets = [job_id] if isinstance(job_id, str) else list(job_id)
        if not all(targets):
            raise ValueError("the run config names no job-id")
        settings = load_settings()
        engine = get_engine(settings.database_url)
        governance = get_governance(settings) if governed else None
        grid = PromptGrid(grid)
        for target in targets:
            runner = JobRunner(
                settings,
                engine,
                grid,
                target,
                progress=progress,
                observer=observer,
                context=context,
                governance=governance,
            )
            # A stop and its reason are recorded by the runner; the run ended as designed.
            with contextlib.suppress(JobStopped):
                runner.run()

    return app


app = build_server_app()
