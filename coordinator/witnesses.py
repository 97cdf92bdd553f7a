"""The coordinator as the ledger's messenger to its witnesses, the companies' nodes.

With each evaluation it hands every node the ledger's newest signed checkpoint and the
consistency proofs from the sizes it believes the nodes last cosigned (a node that holds
another size answers with it, and gets its proof at the next evaluation). Each cosignature
that comes back is checked against the company's registered key and stored on the
checkpoint's note (C2SP signed notes carry any number of signatures), so exports carry
them. A refusal is logged; the node keeps both notes as its own evidence.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import TYPE_CHECKING

from coordinator.receipts import company_actor
from sandbox.governance import Governance
from sandbox.ledger.checkpoint import SignedCheckpoint
from sandbox.ledger.errors import LedgerError
from sandbox.ledger.records import LedgerRecord, Resource
from sandbox.ledger.witness import WitnessKey
from sandbox.protocol.messages import WITNESS, WITNESS_NOTE, WITNESS_PROOFS, number
from sandbox.services import runs

if TYPE_CHECKING:
    from coordinator.messaging import Exchange

log = logging.getLogger(__name__)


class WitnessRelay:
    def __init__(self, gov: Governance) -> None:
        self.gov = gov
        self.held: dict[str, int] = {}
        self.head: SignedCheckpoint | None = None
        self.cosigned: dict[int, list[str]] = {}

    def config(self) -> dict[str, str]:
        """The task config that asks each node to witness the newest checkpoint."""
        ledger = self.gov.ledger
        self.head = head = ledger.checkpoint()
        proofs: dict[str, list[str]] = {"0": [], str(head.size): []}
        for size in set(self.held.values()):
            if 0 < size < head.size:
                hashes = ledger.consistency_proof(size, head.size).hashes
                proofs[str(size)] = [base64.b64encode(h).decode("ascii") for h in hashes]
        return {WITNESS_NOTE: head.note, WITNESS_PROOFS: json.dumps(proofs)}

    def collect(self, exchange: Exchange) -> None:
        """Store the cosignatures the nodes returned; learn the sizes they hold."""
        if self.head is None:
            return
        answers = {
            company: reply.content.config_records[WITNESS]
            for company, reply in exchange.accepted.items()
            if WITNESS in reply.content.config_records
        }
        keys = {company: runs.company_key(self.gov.engine, company) for company in answers}
        for company, answer in answers.items():
            status, body = int(number(answer, "status", 0)), str(answer.get("body", ""))
            if status == 200 and company in keys:
                try:
                    self.gov.ledger.add_cosignature(
                        self.head.size, body, WitnessKey(company, keys[company])
                    )
                except LedgerError as exc:
                    log.warning("witness %s: cosignature not stored: %s", company, exc)
                    continue
                self.held[company] = self.head.size
                self.cosigned.setdefault(self.head.size, []).append(company)
            elif status == 409 and body.strip().isdigit():
                self.held[company] = int(body.strip())
            else:
                log.warning("witness %s refused checkpoint %d: %s %s", company, self.head.size,
                            status, body.strip()[:300])  # fmt: skip
                if status == 422:
                    self.record_alarm(company, self.head.size)

    def record_alarm(self, company: str, size: int) -> None:
        """A node refused the checkpoint as a history that does not extend what it cosigned:
        the ledger says so, where the API, the console and every auditor see it (the node
        keeps both signed notes itself, whatever the log records)."""
        try:
            self.gov.record(
                LedgerRecord(
                    action="ledger.witness_alarm",
                    actor=company_actor(company),
                    resource=Resource(kind="ledger", id=str(size)),
                    details={"checkpoint_size": size},
                )
            )
        except LedgerError as exc:
            log.error("witness %s: its alarm could not be recorded: %s", company, exc)
