"""Functions run in spawned worker processes; this module imports only what they need, so
that each worker starts quickly."""

from __future__ import annotations

from pathlib import Path
from threading import Barrier


def operator_public_key(keys_dir: str, barrier: Barrier) -> str:
    from sandbox.identity import public_b64, sandbox_key

    barrier.wait()
    return public_b64(sandbox_key(Path(keys_dir), "operator"))
