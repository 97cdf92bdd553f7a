"""The ``flwr`` command line against one SuperLink, with its output checked properly.

``flwr`` reads its connections from ``$FLWR_HOME/config.toml``; each ``FlwrCli`` writes its
own file (one connection, TLS with the sandbox CA) under its own ``FLWR_HOME``, so nothing
falls back to Flower's default ``local`` connection (which would start a SuperLink).
``flwr ... --format json`` exits 0 even when it failed; every call here reads the JSON's
``success`` instead. Every call is bounded by a timeout.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONNECTION = "sandbox"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9._:/@+-]*$")


class FlwrError(RuntimeError):
    """``flwr`` failed or answered something unexpected."""


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    status: str
    details: str

    @property
    def finished(self) -> bool:
        return self.status.startswith("finished")

    @property
    def completed(self) -> bool:
        return self.status == "finished:completed"


def toml_value(value: str | int | float | bool) -> str:
    """One run-config value as TOML (strings limited to a safe alphabet: no quoting games)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if not _SAFE_VALUE.match(value):
        raise ValueError(f"run-config value {value!r} holds characters that are not allowed")
    return f'"{value}"'


class FlwrCli:
    def __init__(
        self, flwr: Path, home: Path, address: str, ca_cert: Path, env: Mapping[str, str]
    ) -> None:
        self.flwr = flwr
        self.home = home
        self.address = address
        self.ca_cert = ca_cert.resolve()
        self.env = {**env, "FLWR_HOME": str(home)}
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n'
            f"[superlink.{CONNECTION}]\n"
            f'address = "{address}"\n'
            f'root-certificates = "{self.ca_cert}"\n'
        )

    def call(self, *args: str, timeout: float = 60.0) -> tuple[int, str]:
        """Run ``flwr <args>``; (exit code, output without colour codes)."""
        try:
            done = subprocess.run(
                [str(self.flwr), *args],
                capture_output=True,
                text=True,
                env=self.env,
                cwd=self.home,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise FlwrError(f"flwr {args[0]} did not answer within {timeout:.0f} s") from exc
        return done.returncode, _ANSI.sub("", done.stdout + done.stderr)

    def call_json(self, *args: str, timeout: float = 60.0) -> dict[str, Any]:
        """``flwr <args> --format json``; the JSON document, whatever its ``success``."""
        code, output = self.call(*args, "--format", "json", timeout=timeout)
        start = output.find("{")
        try:
            document, _ = json.JSONDecoder().raw_decode(output[start:]) if start >= 0 else ({}, 0)
        except json.JSONDecodeError:
            document = {}
        if not isinstance(document, dict) or "success" not in document:
            raise FlwrError(f"flwr {args[0]} answered without JSON (exit {code}): {output[-400:]}")
        return document

    @staticmethod
    def _reason(document: dict[str, Any]) -> str:
        return " ".join(str(document.get("error-message", "no reason given")).split())[-400:]

    # ------------------------------------------------------------------ supernodes
    def register(self, public_key_file: Path, name: str) -> str:
        """Register a node's public key; the node id the SuperLink assigned."""
        document = self.call_json(
            "supernode", "register", str(public_key_file), CONNECTION, "--name", name
        )
        if not document.get("success") or "node-id" not in document:
            raise FlwrError(f"registering {name}: {self._reason(document)}")
        return str(int(document["node-id"]))

    def nodes(self) -> dict[str, str]:
        """node id → status (registered, online, offline, unregistered)."""
        document = self.call_json("supernode", "list", CONNECTION, timeout=30)
        if not document.get("success"):
            raise FlwrError(f"listing nodes: {self._reason(document)}")
        return {str(n["node-id"]): str(n["status"]) for n in document.get("nodes", [])}

    def answers(self) -> bool:
        """True when the SuperLink's Control API answers over TLS with the sandbox CA."""
        try:
            self.nodes()
        except FlwrError:
            return False
        return True

    # ------------------------------------------------------------------------ runs
    def run(self, app_dir: Path, run_config: Mapping[str, str | int | float | bool]) -> str:
        """Submit a run of the app in ``app_dir``; its run id."""
        config = " ".join(f"{key}={toml_value(value)}" for key, value in run_config.items())
        document = self.call_json(
            "run", str(app_dir), CONNECTION, "--run-config", config, timeout=180
        )
        if not document.get("success") or "run-id" not in document:
            raise FlwrError(f"submitting the run: {self._reason(document)}")
        return str(document["run-id"])

    def runs(self) -> list[RunStatus]:
        document = self.call_json("list", CONNECTION, timeout=30)
        if not document.get("success"):
            raise FlwrError(f"listing runs: {self._reason(document)}")
        return [
            RunStatus(str(r["run-id"]), str(r["status"]), str(r.get("status-details") or ""))
            for r in document.get("runs", [])
        ]

    def status(self, run_id: str) -> RunStatus:
        document = self.call_json("list", CONNECTION, "--run-id", run_id, timeout=30)
        runs = document.get("runs") or []
        if not document.get("success") or not runs:
            raise FlwrError(f"run {run_id}: {self._reason(document)}")
        run = runs[0]
        return RunStatus(
            str(run["run-id"]), str(run["status"]), str(run.get("status-details") or "")
        )

    def stop(self, run_id: str) -> bool:
        return bool(self.call_json("stop", run_id, CONNECTION, timeout=30).get("success"))
