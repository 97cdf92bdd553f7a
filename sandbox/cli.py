"""The ``sandbox`` command. Each part of the product mounts its own sub-command here."""

from __future__ import annotations

import typer

from sandbox.ledger.cli import audit_app

app = typer.Typer(name="sandbox", help="The regulatory data sandbox.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
