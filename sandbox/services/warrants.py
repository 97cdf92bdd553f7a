"""Warrants: what the policy decided for a job, signed, for the companies' nodes to enforce.

At filing, the rules are asked of Cedar (could this job be admitted without differential
privacy? without secure aggregation? which policies ask for an approval?) and stored with
the job. Once the job may run (admitted, or approved where its tier needs it) the warrant is
issued: the filed spec, the filed code bundle, the tier and the rules, the policy set's
hash, the ledger index of the admission decision, the datasets and, for an approval, the
approving regulator's own signature; the operator signs the whole. A company's node checks
every task against it (``clients.warrants``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sandbox import identity
from sandbox.errors import Forbidden, Invalid
from sandbox.governance import Governance, JobWorld
from sandbox.identity.installation import installation_regulator_key
from sandbox.protocol.jobspec import JobSpec
from sandbox.protocol.warrant import (
    Approval,
    KeyRecord,
    Warrant,
    WarrantDataset,
    WarrantRules,
    approval_statement,
    endorse_key,
    note_sha256,
)
from sandbox.registry import jobs as job_store
from sandbox.registry import principals as principal_store
from sandbox.registry.models import Job
from sandbox.utc import rfc3339, utcnow
from sandbox.vocabulary import INSTALLATION_REGULATOR, OPERATOR_ID

"""The regulator whose key is the installation's own (it signs policy sets and endorses the
keys of the other regulators)."""


def decided_rules(
    gov: Governance, filer: Any, world: JobWorld, tier: str, approval_by: tuple[str, ...]
) -> WarrantRules:
    """The rules Cedar holds the job to, found by asking it: would the job be admitted with
    differential privacy off, or with secure aggregation off?"""
    without_dp = gov.pdp.consider(
        filer, "submit_job", replace(world.job, dp_epsilon=None), entities=world.entities
    )
    without_secagg = gov.pdp.consider(
        filer, "submit_job", replace(world.job, secure_aggregation=False), entities=world.entities
    )
    params = gov.tiers.tiers[tier]
    return WarrantRules(
        requires_dp=not without_dp.allowed,
        requires_secure_aggregation=not without_secagg.allowed,
        dp_epsilon_cap=float(params.dp_epsilon_cap),
        min_participants=params.min_participants,
        approval_by=approval_by,
    )


def issue(gov: Governance, job: Job, world: JobWorld, approval: Approval | None = None) -> str:
    """The job's warrant, signed by the operator (canonical JSON)."""
    if job.rules is None or job.bundle_hash is None or job.admission_decision is None:
        raise Invalid(f"job {job.id} has no rules, code bundle or admission on file")
    admission = job_store.find_decision(gov.engine, job.admission_decision)
    if admission is None:
        raise Invalid(f"the admission decision of job {job.id} is not on file")
    spec = job_store.job_spec(job)
    warrant = Warrant(
        job_id=job.id,
        engineer=job.filed_by,
        spec=spec.model_dump(mode="json"),
        spec_hash=job.spec_hash,
        code_bundle=job.bundle_hash,
        tier=job.risk_tier,  # type: ignore[arg-type]
        rules=WarrantRules.model_validate(job.rules),
        policy_set=gov.pdp.active_hash,
        admission_index=admission.ledger_index,
        datasets=tuple(_datasets(world, spec)),
        issued_at=rfc3339(utcnow()),
        approval=approval,
    )
    return warrant.signed(identity.sandbox_key(gov.settings.keys_dir, "operator")).text()


def _datasets(world: JobWorld, spec: JobSpec) -> list[WarrantDataset]:
    out = []
    for facts in world.dataset_facts:
        out.append(
            WarrantDataset(
                company=facts.company,
                dataset=facts.id,
                industry=facts.industry,
                grade=facts.grade,  # type: ignore[arg-type]
                personal_data=facts.personal_data,
            )
        )
    return sorted(out, key=lambda d: d.company)


# ------------------------------------------------------------------------------ approvals
def regulator_key(gov: Governance, regulator_id: str) -> tuple[str, KeyRecord | None]:
    """The public key a regulator's approval must verify with, and the key record that lets
    a node trust it (None for the installation's own regulator)."""
    if regulator_id == INSTALLATION_REGULATOR:
        return gov.regulator_public_key, None
    principal = principal_store.find_principal(gov.engine, regulator_id)
    if principal is None or principal.role != "regulator":
        raise Forbidden(f"{regulator_id!r} is not a registered regulator")
    if principal.endorsement is None:
        raise Forbidden(
            f"regulator {regulator_id}'s key is not endorsed by the installation's regulator "
            "key, so no company's node would trust its approval"
        )
    return principal.public_key, KeyRecord.model_validate(principal.endorsement)


def approval_to_sign(job: Job, regulator_id: str, time: str, note: str) -> bytes:
    """The statement a regulator signs to approve ``job``."""
    if job.bundle_hash is None:
        raise Invalid(f"job {job.id} has no filed code bundle")
    return approval_statement(
        job.id, job.spec_hash, job.bundle_hash, regulator_id, time, note_sha256(note)
    )


def signed_approval(
    gov: Governance, job: Job, regulator_id: str, time: str, note: str, signature: str
) -> Approval:
    """The regulator's approval, its signature checked against the regulator's key."""
    public_key, record = regulator_key(gov, regulator_id)
    statement = approval_to_sign(job, regulator_id, time, note)
    if not identity.verify(public_key, statement, signature):
        raise Forbidden(
            f"the approval's signature is not regulator {regulator_id}'s over job {job.id}'s "
            "filed spec and code"
        )
    return Approval(
        regulator=regulator_id,
        time=time,
        note_sha256=note_sha256(note),
        signature=signature,
        key=record,
    )


def endorsement_for(
    gov: Governance, principal_id: str, public_key: str, given: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A key record for a new regulator, endorsed by the installation's regulator key: the
    one ``given`` (made on the regulator's machine with ``sandbox regulator endorse``), checked
    against the installation regulator's public key, or one signed now with the key this
    home keeps."""
    if given is None:
        signer = installation_regulator_key(gov.settings, "endorsing a regulator's key")
        record = endorse_key(signer, "regulator", principal_id, public_key, rfc3339(utcnow()))
        return record.model_dump(mode="json")
    try:
        record = KeyRecord.model_validate(given)
    except ValueError as exc:
        raise Invalid(f"the endorsement is not a key record: {exc}") from None
    if (record.role, record.principal, record.public_key, record.signed_by) != (
        "regulator", principal_id, public_key, "regulator"
    ):  # fmt: skip
        raise Invalid(f"the endorsement is not for regulator {principal_id} with this public key")
    if not identity.verify(gov.regulator_public_key, record.statement(), record.signature):
        raise Forbidden("the endorsement is not signed by the installation's regulator key")
    return record.model_dump(mode="json")


def sandbox_public_keys(gov: Governance) -> dict[str, str]:
    """The keys a company's node pins when it joins."""
    return {
        "operator": identity.public_b64(identity.sandbox_key(gov.settings.keys_dir, "operator")),
        "regulator": gov.regulator_public_key,
        "operator_id": OPERATOR_ID,
    }
