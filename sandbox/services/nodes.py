"""Company nodes on the deployment engine: the operator records the SuperNode key a company
sent (never the private half) and its registration with the SuperLink; both are decided
(``register_node_key``) and recorded."""

from __future__ import annotations

from typing import Any

from sandbox.governance import Annotation, Governance, company_facts
from sandbox.ledger import LedgerRecord, Resource
from sandbox.registry import companies as company_store
from sandbox.registry import nodes as store
from sandbox.registry.models import NodeKey
from sandbox.services.base import actor_of, authorize, read_registry


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
