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
from flwr.serverapp import ServerApp

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


def node_dirs_of(settings: Settings, job_ids: Sequence[str]) -> list[str]:
    """The node folders of every company any of the jobs names, in partition order."""
    engine = get_governance(settings).engine
    companies: list[str] = []
    for job_id in job_ids:
        for company in runs.spec(runs.job(engine, job_id)).companies:
            if company not in companies:
                companies.append(company)
    return [str(settings.company_dir(company)) for company in companies]


def run_engine(
    settings: Settings, server_app: ServerApp, client_app: ClientApp, nodes: int, client_cpus: float
) -> None:
    """Flower's simulation engine over ``nodes`` virtual SuperNodes."""
    quiet_flower_environment(settings.home)
    from flwr.simulation import run_simulation

    _silence_flower()
    linkstate.install()
    cpus = max(1, os.cpu_count() or 1)
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=nodes,
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


def simulate(
    settings: Settings,
    job_ids: Sequence[str],
    progress: Progress | None = None,
    observer: ReplyObserver | None = None,
    client_cpus: float = 1.0,
    company_app: ClientAppFactory = make_client_app,
) -> None:
    """Run ``job_ids`` one after another in one simulation, governed, over one node per
    company that any of them names (the engine starts once). Each node is assembled from the
    company's own folder (its keys, its vault, the keys it pinned) with the company's app,
    whose gate no one but the company can leave out: ``company_app`` is the company's
    choice (a test plays a misbehaving company with it), never the coordinator's."""
    dirs = node_dirs_of(settings, job_ids)
    server = build_server_app(list(job_ids), progress=progress, observer=observer)
    run_engine(settings, server, company_app(dirs), len(dirs), client_cpus)


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
    company_app: ClientAppFactory = make_client_app,
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
    simulate(settings, job_ids, progress, observer, client_cpus, company_app)
    return {job_id: outcome_of(settings, job_id) for job_id in job_ids}


def run_on_simulation(
    settings: Settings,
    job_id: str,
    actor: Any = None,
    progress: Progress | None = None,
    observer: ReplyObserver | None = None,
    client_cpus: float = 1.0,
) -> dict[str, Any]:
    """Start ``job_id`` through the services and run it to its end on the simulation."""
    return run_jobs_on_simulation(settings, [job_id], actor, progress, observer, client_cpus)[
        job_id
    ]
