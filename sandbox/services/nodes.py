"""Company nodes: on the deployment engine the operator records the SuperNode key a company
sent (never the private half) and its registration with the SuperLink, both decided
(``register_node_key``) and recorded; and the refusals of every company's node reach the
ledger as the company's own signed notices (``node.refused``)."""

from __future__ import annotations

from typing import Any

from sandbox.errors import Invalid
from sandbox.governance import Annotation, Governance, company_facts
from sandbox.ledger import Actor, LedgerRecord, Resource
from sandbox.protocol.notices import NoticeError, RefusalNotice, verify_notice
from sandbox.registry import companies as company_store
from sandbox.registry import nodes as store
from sandbox.registry.models import NodeKey, NodeRefusal
from sandbox.services.base import actor_of, authorize, read_registry
from sandbox.services.companies import company_data


def _decide(gov: Governance, actor: Any, company_id: str, what: str) -> None:
    company = company_store.get_company(gov.engine, company_id)
    authorize(
        gov,
        actor,
        "register_node_key",
        company_facts(company),
        annotation=Annotation(
            owner=company_id,
            resource_kind="company",
            resource_id=company_id,
            details={"view": what},
        ),
    )


def _record(action: str, actor: Any, key: NodeKey, **details: Any) -> LedgerRecord:
    return LedgerRecord(
        action=action,
        actor=actor_of(actor),
        resource=Resource(kind="key", id=f"node:{key.company_id}", owner=key.company_id),
        details={"fingerprint": key.fingerprint, **details},
    )


def record_node_key(
    gov: Governance, actor: Any, company_id: str, public_key: str, replace: bool = False
) -> NodeKey:
    """Record the public half of a company's SuperNode key. A different key replaces the old
    one only with ``replace`` (its SuperLink registration is then void)."""
    line = store.normalise_node_key(public_key)
    _decide(gov, actor, company_id, "node_key")
    before = store.find_node_key(gov.engine, company_id)
    stored = store.put_node_key(gov.engine, company_id, line, replace=replace)
    if before is None or before.public_key != stored.public_key:
        gov.record(_record("node_key.recorded", actor, stored, replaced=before is not None))
    return stored


def record_registration(
    gov: Governance, actor: Any, company_id: str, public_key: str, superlink: str, node_id: str
) -> NodeKey:
    """The SuperLink at ``superlink`` admitted the company's node key as node ``node_id``."""
    _decide(gov, actor, company_id, "superlink_registration")
    registered = store.mark_registered(gov.engine, company_id, public_key, superlink, node_id)
    gov.record(
        _record("node_key.registered", actor, registered, node_id=str(registered.flower_node_id))
    )
    return registered


def node_keys(gov: Governance, actor: Any) -> list[NodeKey]:
    """Every company's recorded node key."""
    read_registry(gov, actor, "node_keys")
    return store.list_node_keys(gov.engine)


def node_key(gov: Governance, actor: Any, company_id: str) -> NodeKey:
    read_registry(gov, actor, "node_keys")
    return store.get_node_key(gov.engine, company_id)


# ----------------------------------------------------------------------- refusal notices
def record_refusals(
    gov: Governance,
    company_id: str,
    notices: list[tuple[str, str]],
    via: str,
    actor: Any = None,
) -> list[NodeRefusal]:
    """Put a company's signed refusal notices in the ledger (``node.refused``, the company's
    own statement) and keep them whole; a notice already recorded is not recorded again. A
    notice that is not signed by the company it names is refused (Invalid). When the company
    hands them over itself (``actor``), that is decided (``report_refusal``); the coordinator
    passes on what a node's refusal carried, which the company's signature vouches for."""
    company = company_store.get_company(gov.engine, company_id)
    if actor is not None:
        authorize(
            gov,
            actor,
            "report_refusal",
            company_facts(company),
            annotation=Annotation(
                owner=company_id, resource_kind="company", resource_id=company_id
            ),
        )
    key = company.public_key
    recorded = []
    for text, signature in notices:
        try:
            notice = verify_notice(text, signature, key, company_id)
        except NoticeError as exc:
            raise Invalid(str(exc)) from None
        row, new = store.add_refusal(
            gov.engine,
            NodeRefusal(
                id=notice.notice_id,
                company_id=company_id,
                job_id=notice.job,
                task=notice.task,
                cause=notice.cause,
                reason=notice.reason,
                payload=text,
                signature=signature,
                noticed_at=notice.time,
                via=via,
            ),
        )
        if new:
            appended = gov.record(refusal_record(notice, via))
            store.set_refusal_index(gov.engine, row.id, appended.index)
            row.ledger_index = appended.index
        recorded.append(row)
    return recorded


def refusal_record(notice: RefusalNotice, via: str) -> LedgerRecord:
    """The ledger's record of a refusal: the company's statement, with its notice's id."""
    return LedgerRecord(
        action="node.refused",
        actor=Actor(principal=notice.company, role="company", organisation=notice.company),
        resource=Resource(kind="job", id=notice.job)
        if notice.job
        else Resource(kind="company", id=notice.company, owner=notice.company),
        job_id=notice.job,
        details={
            "task": notice.task,
            "cause": notice.cause,
            "notice_sha256": notice.notice_id,
            "node_log_index": notice.log_index,
            "via": via,
        },
    )


def refusals(gov: Governance, actor: Any, company_id: str) -> list[NodeRefusal]:
    """The refusals of a company's node that reached the sandbox (a governed read)."""
    company_data(gov, actor, company_id, "refusals")
    return store.refusals_of(gov.engine, company_id=company_id)
