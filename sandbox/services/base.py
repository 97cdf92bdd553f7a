"""What every service does: decide (recorded), refuse with the policy's reasons, name the
actor in the ledger's records."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from policies.engine import NOT_RECORDED, Decision
from policies.facts import (
    CompanyFacts,
    EngineerFacts,
    OperatorFacts,
    RegistryFacts,
    RegulatorFacts,
)
from sandbox.errors import Forbidden, NotFound
from sandbox.governance import Annotation, Governance, company_facts
from sandbox.ledger import Actor
from sandbox.node.home import NodeHome
from sandbox.registry import companies as company_store
from sandbox.registry.models import Company
from sandbox.registry.principals import find_principal
from sandbox.vocabulary import RESERVED_IDS

PrincipalFacts = CompanyFacts | EngineerFacts | RegulatorFacts | OperatorFacts
"""Who acts, as the policy sees them."""

ROLE_OF_KIND = {
    "Company": "company",
    "Engineer": "engineer",
    "Regulator": "regulator",
    "Operator": "operator",
}


def denied(decision: Decision) -> Forbidden:
    reasons = " ".join(decision.reasons) or "denied by policy"
    return Forbidden(
        f"{reasons} (decision {decision.decision_id})",
        decision_id=decision.decision_id,
        reasons=tuple(decision.reasons),
        unrecorded=decision.reasons == (NOT_RECORDED,),
    )


def authorize(
    gov: Governance,
    principal: Any,
    action: str,
    resource: Any,
    context: Any = None,
    entities: Sequence[Any] = (),
    annotation: Annotation | None = None,
) -> Decision:
    """Decide (and record); raise Forbidden with the policy's reasons when denied."""
    decision = gov.decide(principal, action, resource, context, entities, annotation)
    if not decision.allowed:
        raise denied(decision)
    return decision


def id_available(gov: Governance, principal_id: str) -> bool:
    """Whether ``principal_id`` names no company, no registered principal and no reserved
    name (one namespace for every principal)."""
    return (
        principal_id.lower() not in RESERVED_IDS
        and company_store.find_company(gov.engine, principal_id) is None
        and find_principal(gov.engine, principal_id) is None
    )


def role_of(principal: Any) -> str:
    return ROLE_OF_KIND[principal.KIND]


def actor_of(principal: Any) -> Actor:
    """The ledger's actor for a principal's policy facts."""
    role = role_of(principal)
    return Actor(
        principal=principal.id,
        role=role,  # type: ignore[arg-type]
        organisation=principal.id if role == "company" else None,
    )


def view(name: str, **more: Any) -> Annotation:
    """The annotation of a governed read: which view of the resource was read."""
    return Annotation(details={"view": name}, **more)


def read_registry(gov: Governance, actor: Any, view_name: str) -> None:
    """Decide a read of the registry as a whole (companies, principals, policy set)."""
    authorize(gov, actor, "read_registry", RegistryFacts(), annotation=view(view_name))


# ------------------------------------------------------------------------- companies
def company_in_question(
    gov: Governance, company_id: str, actor: Any
) -> tuple[Company | None, CompanyFacts, Any]:
    """The company (None if it is not in the registry), its policy facts, and who acts: the
    given actor, or (None) the company itself. For an id that is not in the registry the
    facts describe a company that is not there, so that the policy still decides whether the
    asker may learn that; the company itself, absent, cannot ask."""
    company = company_store.find_company(gov.engine, company_id)
    if company is None:
        if actor is None:
            raise NotFound(f"no company {company_id!r}")
        return None, CompanyFacts(id=company_id, industry="(not in the registry)"), actor
    facts = company_facts(company)
    return company, facts, actor or facts


def hidden(gov: Governance, actor: Any, company: CompanyFacts, missing: str) -> Exception:
    """What to answer when a company's dataset or consent is not there: NotFound, but only to
    whom the policy lets read that company's data; anyone else is denied (and recorded), so
    that asking cannot reveal which datasets or consents another company holds."""
    decision = gov.decide(
        actor,
        "read_company_data",
        company,
        annotation=Annotation(
            owner=company.id,
            resource_kind="company",
            resource_id=company.id,
            details={"view": "lookup"},
        ),
    )
    return NotFound(missing) if decision.allowed else denied(decision)


def node_update(node_dir: Path | None, change: Callable[[NodeHome], object]) -> None:
    """Apply ``change`` to the company's node record when the node folder is on this machine
    (simulated companies; a company's own CLI). Elsewhere the company's node tooling does it."""
    if node_dir is not None and (node_dir / "node.json").exists():
        change(NodeHome(node_dir))
