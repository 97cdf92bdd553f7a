"""Jobs on Flower's simulation engine (Ray) on this machine: one virtual SuperNode per
participating company, each reading only its own node folder.

:func:`run_on_simulation` is how the CLI and the demo run a job: the start is the services'
(decided and recorded, see :func:`sandbox.services.runs.start_job`), and the simulation is the
launcher it hands the job to.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from flwr.clientapp import ClientApp

from clients.app import make_client_app
from coordinator import linkstate
from coordinator.app import build_server_app
from coordinator.messaging import Progress, ReplyObserver
from sandbox.config import Settings, quiet_flower_environment
from sandbox.governance import get_governance
from sandbox.services import principals, runs

ClientAppFactory = Callable[[Sequence[str]], ClientApp]


def _silence_flower() -> None:
    from flwr.supercore.logger import update_console_handler

    # The coordinator records every node error itself; Flower's own console lines (including
    # run_simulation's deprecation notice) would only repeat them.
    update_console_handler(level=logging.ERROR, timestamps=False, colored=False)
    logging.getLogger("flwr").setLevel(logging.ERROR)


def simulate(
    settings: Settings,
    job_ids: Sequence[str],
    progress: Progress | None = None,
    observer: ReplyObserver | None = None,
    client_cpus: float = 1.0,
    client_app: ClientAppFactory | None = None,
    governed: bool = True,
) -> None:
    """Run ``job_ids`` one after another in one simulation, over one node per company that
    any of them names (the simulation engine starts once). ``client_app`` builds the
    ClientApp from the node folders in partition order (default: the company's own app)."""
    quiet_flower_environment(settings.home)
    from flwr.simulation import run_simulation

    engine = get_governance(settings).engine
    companies: list[str] = []
    for job_id in job_ids:
        for company in runs.spec(runs.job(engine, job_id)).companies:
            if company not in companies:
                companies.append(company)
    node_dirs = [str(settings.company_dir(company)) for company in companies]
    _silence_flower()
    linkstate.install()
    cpus = max(1, os.cpu_count() or 1)
    run_simulation(
        server_app=build_server_app(
            list(job_ids), progress=progress, observer=observer, governed=governed
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


def outcome_of(settings: Settings, job_id: str) -> dict[str, Any]:
    job = runs.job(get_governance(settings).engine, job_id)
    return {"status": job.status, "reason": job.status_reason, "result": job.result}


def run_jobs_on_simulation(
    settings: Settings,
    job_ids: Sequence[str],
    actor: Any = None,
    progress: Progress | None = None,
    observer: ReplyObserver | None = None,
    client_cpus: float = 1.0,
    client_app: ClientAppFactory | None = None,
) -> dict[str, dict[str, Any]]:
    """Start each job through the services (decided, recorded; ``actor`` by default the
    job's filing engineer, on the sandbox's own machine), then run them all in one
    simulation. Returns each job's status, reason and result."""
    gov = get_governance(settings)
    for job_id in job_ids:
        filer = actor or principals.acting_as(
            gov, "engineer", runs.job(gov.engine, job_id).filed_by
        )
        runs.start_job(gov, filer, job_id, launch=lambda _: None, resume=True)
    simulate(settings, job_ids, progress, observer, client_cpus, client_app)
    return {job_id: outcome_of(settings, job_id) for job_id in job_ids}


def run_on_simulation(
    settings: Settings,
    job_id: str,
    actor: Any = None,
    progress: Progress | None = None,
    observer: ReplyObserver | None = None,
    client_cpus: float = 1.0,
    client_app: ClientAppFactory | None = None,
) -> dict[str, Any]:
    """Start ``job_id`` through the services and run it to its end on the simulation."""
    return run_jobs_on_simulation(
        settings, [job_id], actor, progress, observer, client_cpus, client_app
    )[job_id]
