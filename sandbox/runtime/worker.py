"""A job run started over the API: ``python -m sandbox.runtime.worker JOB_ID``.

Runs the started job on the simulation engine with the sandbox settings of its environment and exits
0 when the job completed, 1 otherwise. On SIGTERM it unwinds (so that Ray shuts down in
order) before the API's grace period ends and it is killed.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m sandbox.runtime.worker JOB_ID", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    for name in ("sandbox", "coordinator", "__main__"):
        logging.getLogger(name).setLevel(logging.INFO)
    from sandbox.config import load_settings
    from sandbox.runtime.simulation import outcome_of, simulate

    # The start was decided and recorded by the API (sandbox.services.runs.start_job); this
    # process is its launcher.
    settings = load_settings()
    simulate(settings, [args[0]])
    outcome = outcome_of(settings, args[0])
    logging.getLogger(__name__).info("job %s ended %s", args[0], outcome["status"])
    return 0 if outcome["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
