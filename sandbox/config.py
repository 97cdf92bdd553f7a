"""Settings of the sandbox, read from the environment (prefix ``SANDBOX_``).

Everything the product writes lives under one home folder (``SANDBOX_HOME``, default
``./.sandbox``): the database file, the sandbox's own keys, and, for companies simulated
on this machine, each company's node folder (its vault, key and local log). In a real
deployment a company's node folder lives on the company's own premises.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


def _env(name: str, default: str) -> str:
    value = os.environ.get(f"SANDBOX_{name}")
    return value if value not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    ledger_origin: str
    regulator_public_key_file: Path | None = None
    """Where the installation regulator's public key is, when its private key lives on the
    regulator's own machine (``SANDBOX_REGULATOR_PUBLIC_KEY_FILE``, written by ``sandbox
    regulator init``); ``None``: the key is made and kept in this home (the embedded default)."""

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def companies_dir(self) -> Path:
        return self.home / "companies"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    def company_dir(self, company_id: str) -> Path:
        return self.companies_dir / company_id


def _database_url(home: Path) -> str:
    """``SANDBOX_DATABASE_URL_FILE`` (a secret's file, e.g. /run/secrets/database-url) wins
    over ``SANDBOX_DATABASE_URL``; the default is a SQLite file in the home."""
    secret = _env("DATABASE_URL_FILE", "")
    if secret:
        try:
            return Path(secret).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"SANDBOX_DATABASE_URL_FILE {secret}: {exc.strerror}") from None
    return _env("DATABASE_URL", f"sqlite:///{home / 'sandbox.db'}")


def load_settings() -> Settings:
    """Read the settings afresh from the environment (cheap; no caching, tests change env)."""
    home = Path(_env("HOME", str(Path.cwd() / ".sandbox"))).expanduser().resolve()
    database_url = _database_url(home)
    origin = _env("LEDGER_ORIGIN", "sandbox.example/ledger")
    regulator_public = _env("REGULATOR_PUBLIC_KEY_FILE", "")
    return Settings(
        home=home,
        database_url=database_url,
        ledger_origin=origin,
        regulator_public_key_file=Path(regulator_public) if regulator_public else None,
    )


def quiet_flower_environment(home: Path) -> dict[str, str]:
    """Environment every process that runs Flower needs here: no telemetry, no update check,
    Flower's state under the sandbox home, Ray bound to loopback."""
    env = {
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_HOME": str(home / "flwr"),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_DEDUP_LOGS": "0",
        # One Ray folder per sandbox home, so that two installations (or test runs) on one
        # machine never meet in a shared session; short, since Ray's sockets live inside it.
        "RAY_TMPDIR": str(
            Path(os.environ.get("TMPDIR", "/tmp"))
            / f"sandbox-ray-{hashlib.sha256(str(home).encode()).hexdigest()[:10]}"
        ),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    }
    os.environ.update(env)
    return env
