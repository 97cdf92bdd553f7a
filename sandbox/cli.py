"""The ``sandbox`` command."""

from __future__ import annotations

import typer

from policies.cli import policy_app

app = typer.Typer(help="The regulatory data sandbox.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


def main() -> None:
    app()
