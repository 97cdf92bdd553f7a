"""Flower's deployment engine for the sandbox: a SuperLink and one SuperNode per company,
with TLS from the sandbox's CA and node authentication by keys held in the registry.

The ServerApp and ClientApp are the same as in the simulation (``coordinator.app:app``,
``clients.app:app``); ``APP_DIR`` holds the Flower app manifest that ``flwr run`` bundles.
"""

from pathlib import Path

APP_DIR = Path(__file__).resolve().parent / "flwrapp"
