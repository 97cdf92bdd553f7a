"""The ``sandbox`` command, one module per command group; every command calls the same
service functions as the API and the console (:mod:`sandbox.services`)."""

from __future__ import annotations

import typer

from sandbox.cli.admission import company_admit
from sandbox.cli.audit import audit_app
from sandbox.cli.company import company_app
from sandbox.cli.db import db_app
from sandbox.cli.demo import demo
from sandbox.cli.federation import federation_app
from sandbox.cli.federation_nodes import demo_company, node_cmd, node_key
from sandbox.cli.job import job_app, report
from sandbox.cli.policy import policy_app
from sandbox.cli.principal import principal_app, token_app
from sandbox.cli.regulator import regulator_app
from sandbox.cli.settlement import job_settle
from sandbox.config import load_settings

# The company-side federation commands attach themselves to ``federation_app``, the
# review of applications and settlement to ``company_app`` and ``job_app``.
_COMPANY_SIDE = (demo_company, node_cmd, node_key, company_admit, job_settle)

app = typer.Typer(help="The regulatory data sandbox.", no_args_is_help=True, add_completion=False)
app.command()(demo)
app.add_typer(company_app, name="company")
app.add_typer(job_app, name="job")
app.command()(report)
app.add_typer(policy_app, name="policy")
app.add_typer(audit_app, name="audit")
app.add_typer(db_app, name="db")
app.add_typer(federation_app, name="federation")
app.add_typer(principal_app, name="principal")
app.add_typer(regulator_app, name="regulator")
app.add_typer(token_app, name="token")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Serve the HTTP API (OpenAPI documentation at /docs; GET /health for health checks)."""
    from sandbox.api.server import serve as run_server

    run_server(host, port, load_settings(), log_level)


def main() -> None:
    app()
