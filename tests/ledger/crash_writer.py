"""A ledger writer that runs until it is killed: the victim of the crash tests.

It prints ``ack <index> <record_id>`` once each append has committed and ``cp <size>`` once
each checkpoint is signed, flushing every line, so that the test knows exactly what was
acknowledged before the SIGKILL.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sandbox.db import get_engine
from sandbox.identity import sandbox_key
from sandbox.ledger import Ledger
from tests.ledger.helpers import make_record


def main(database_url: str, keys_dir: str, origin: str) -> None:
    ledger = Ledger(get_engine(database_url), sandbox_key(Path(keys_dir), "operator"), origin)
    number = 0
    while True:
        if number % 3 == 2:
            batch = [make_record(number + i, record_id=f"crash-{number + i}") for i in range(10)]
            for item in ledger.append_many(batch):
                print(f"ack {item.index} {item.record_id}", flush=True)
            number += 10
        else:
            item = ledger.append(make_record(number, record_id=f"crash-{number}"))
            print(f"ack {item.index} {item.record_id}", flush=True)
            number += 1
        if number % 25 < 10:
            checkpoint = ledger.checkpoint()
            print(f"cp {checkpoint.checkpoint.size}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
