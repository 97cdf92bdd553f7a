"""The node's health: its log follower marks the node connected only when the SuperNode
reports the id the SuperLink gave it after accepting its key; a refusal, a TLS failure or a
plain start leave no mark; the `node-health` command reads the mark."""

from __future__ import annotations

import io
import json
from pathlib import Path

from typer.testing import CliRunner

from sandbox.cli import app
from sandbox.runtime.federation.node import (
    CONNECTED_FILE,
    connected_node_id,
    follow,
    is_connected,
)

# Lines as Flower 1.42's SuperNode writes them (ANSI colours always on).
STARTING = b"\x1b[92mINFO \x1b[0m:      Starting Flower SuperNode\n"
REFUSED = b"\x1b[91mERROR \x1b[0m:     [code: 2004] Failed to activate SuperNode.\n"
TLS = b"\x1b[91mERROR \x1b[0m:     ssl: CERTIFICATE_VERIFY_FAILED\n"
CONNECTED = b"\x1b[92mINFO \x1b[0m:      SuperNode ID: 4611686018427387904\n"


def test_only_the_authenticated_connection_marks_the_node(tmp_path: Path) -> None:
    out = io.BytesIO()
    follow(io.BytesIO(STARTING + REFUSED + TLS), tmp_path, out)
    assert not is_connected(tmp_path) and not (tmp_path / CONNECTED_FILE).exists()
    assert out.getvalue() == STARTING + REFUSED + TLS  # the log is passed on unchanged
    follow(io.BytesIO(STARTING + CONNECTED), tmp_path, out)
    assert is_connected(tmp_path)
    marker = json.loads((tmp_path / CONNECTED_FILE).read_text())
    assert marker["node_id"] == 4611686018427387904 and marker["since"].endswith("Z")


def test_the_id_is_read_from_the_line_alone() -> None:
    assert connected_node_id(CONNECTED.decode()) == 4611686018427387904
    assert connected_node_id("SuperNode ID: not-a-number") is None
    assert connected_node_id(STARTING.decode()) is None


def test_a_damaged_mark_is_not_health(tmp_path: Path) -> None:
    for text in ("", "{", '{"node_id": 0}', '{"node": 5}', "[]"):
        (tmp_path / CONNECTED_FILE).write_text(text)
        assert not is_connected(tmp_path), text


def test_the_health_command_reads_the_mark(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["federation", "node-health", "construction", "--node-dir", str(tmp_path)]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and "not connected" in refused.output
    follow(io.BytesIO(CONNECTED), tmp_path, io.BytesIO())
    passed = runner.invoke(app, args)
    assert passed.exit_code == 0 and "connected and authenticated" in passed.output
