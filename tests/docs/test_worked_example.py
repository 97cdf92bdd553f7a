"""The README's worked example runs as written: its shell lines, taken from the README, join
three stations from the shipped CSV files (blanks and all), file and run the job, show it and
write its report, on the embedded defaults in a folder of its own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- worked-example"

pytestmark = pytest.mark.slow


def worked_example() -> str:
    """The shell block that follows the README's worked-example marker."""
    readme = (ROOT / "README.md").read_text()
    after = readme[readme.index(MARKER) :]
    found = re.search(r"```sh\n(.*?)```", after, re.S)
    assert found is not None, "the worked example's shell block is missing"
    return found.group(1)


def test_the_block_is_the_one_the_readme_shows() -> None:
    block = worked_example()
    assert "sandbox company join" in block and "sandbox report" in block
    for path in re.findall(
        r"examples/[\w/.-]+\.(?:csv|toml)", block.replace('"$station"', "biscoe")
    ):
        assert (ROOT / path).is_file(), path


def test_the_readme_worked_example_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    script = "set -euo pipefail\n" + worked_example()
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    # Each station joined, with the blanks filled from its training rows and the unlabelled
    # birds left out, as the manifest declares.
    for left_out in (5, 1, 5):  # biscoe, dream, torgersen: birds without a recorded sex
        assert f"\n{left_out} row(s) with a blank target left out, as declared" in output
    assert [s for s in ("biscoe", "dream", "torgersen") if f"{s} joined" in output] == [
        "biscoe", "dream", "torgersen"
    ]  # fmt: skip
    assert "blanks in delta_15n" in output and "median of the training rows" in output
    assert "Job job-" in output and ": completed" in output
    assert "release allowed" in output
    mean = re.search(r"│ mean\s+│ (\d\.\d+)\s+│ (\d\.\d+)", output)
    assert mean is not None, output[-3000:]
    assert float(mean.group(1)) >= 0.85  # the federated model sexes the birds well
    reports = list((tmp_path / ".sandbox" / "penguins" / "reports").iterdir())
    assert sorted(p.suffix for p in reports) == [".html", ".json"]
