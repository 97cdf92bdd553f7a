"""Run a job on Flower's simulation engine (Ray) on this machine: one virtual SuperNode per
participating company, each reading only its own node folder."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from flwr.clientapp import ClientApp

from coordinator import linkstate
from coordinator.app import build_server_app
from coordinator.runner import Progress, ReplyObserver
from coordinator.selection import ParticipantSelector, budget_selector
from sandbox.config import Settings, quiet_flower_environment
from sandbox.db import get_engine
from sandbox.registry import service

ClientAppFactory = Callable[[Sequence[str]], ClientApp]


def _silence_flower() -> None:
    from flwr.supercore.logger import update_console_handler

    # The coordinator records every node error itself; Flower's own console lines (including
    # run_simulation's deprecation notice) would only repeat them.
    update_console_handler(level=logging.ERROR, timestamps=False, colored=False)
    logging.getLogger("flwr").setLevel(logging.ERROR)


def run_on_simulation(
    settings: Settings,
    job_id: str,
    progress: Progress | None = None,
    observer: ReplyObserver | None = None,
    client_cpus: float = 1.0,
    client_app: ClientAppFactory | None = None,
    governed: bool = True,
) -> dict[str, Any]:
    """Run ``job_id`` to its end and return the job's stored result."""
    return run_jobs_on_simulation(
        settings, [job_id], progress, observer, client_cpus, client_app, governed=governed
    )[job_id]


def run_jobs_on_simulation(
    settings: Settings,
    job_ids: Sequence[str],
    progress: Progress | None = None,
    observer: ReplyObserver | None = None,
    client_cpus: float = 1.0,
    client_app: ClientAppFactory | None = None,
    selector: ParticipantSelector = budget_selector,
    governed: bool = True,
) -> dict[str, dict[str, Any]]:
    """Run ``job_ids`` one after another in one simulation, over one node per company that
    any of them names (the simulation engine starts once). ``client_app`` builds the
    ClientApp from the node folders in partition order (default: the company's own app)."""
    quiet_flower_environment(settings.home)
    from flwr.simulation import run_simulation

    from clients.app import make_client_app

    engine = get_engine(settings.database_url)
    companies: list[str] = []
    for job_id in job_ids:
        for company in service.job_spec(service.get_job(engine, job_id)).companies:
            if company not in companies:
                companies.append(company)
    node_dirs = [str(settings.company_dir(company)) for company in companies]
    _silence_flower()
    linkstate.install()
    cpus = max(1, os.cpu_count() or 1)
    run_simulation(
        server_app=build_server_app(
            list(job_ids),
            progress=progress,
            observer=observer,
            selector=selector,
            governed=governed,
        ),
        client_app=(client_app or make_client_app)(node_dirs),
        num_supernodes=len(node_dirs),
        backend_config={
            "client_resources": {"num_cpus": client_cpus, "num_gpus": 0.0},
            "init_args": {
                "num_cpus": cpus,
                "num_gpus": 0,
                "include_dashboard": False,
                "logging_level": "ERROR",
                "log_to_driver": False,
            },
        },
    )
    outcomes = {}
    for job_id in job_ids:
        job = service.get_job(engine, job_id)
        outcomes[job_id] = {"status": job.status, "reason": job.status_reason, "result": job.result}
    return outcomes
