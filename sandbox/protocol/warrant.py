"""The job warrant: the sandbox's signed statement of what an admitted job may do.

A warrant is issued when a job is admitted (and, where its tier needs it, approved). It
holds the filed spec and its hash, the filed code bundle's hash, the tier and the rules the
policy decided for the job, the hash of the policy set that decided, the ledger index of the
admission decision, every dataset the job reads (with the industry and grade that set its
tier) and, where the tier asks for one, the approving regulator's own signature. The
operator signs the whole.

A company's node trusts nothing the coordinator says about a job that the warrant does not
say: it verifies the warrant against the keys it pinned when it joined, then derives every
privacy parameter and every task it will do from the warrant's spec.

Signatures are Ed25519 over RFC 8785 canonical JSON, each under its own domain string, so
that no signed statement of one kind can pass for another.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sandbox import identity
from sandbox.canonical import canonical_json
from sandbox.protocol.jobspec import JobSpec
from sandbox.vocabulary import Grade, Id, JobId, Sha256Hex, Tier

WARRANT_DOMAIN: Literal["sandbox-warrant/v1"] = "sandbox-warrant/v1"
APPROVAL_DOMAIN = "sandbox-approval/v1"
KEY_RECORD_DOMAIN = "sandbox-key/v1"
MAX_WARRANT_BYTES = 256_000


class WarrantError(ValueError):
    """A warrant (or a key record or an approval in it) that cannot be trusted."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WarrantDataset(_Frozen):
    """A dataset the job reads, with the facts that set the job's tier."""

    company: Id
    dataset: str = Field(max_length=200)
    industry: str = Field(max_length=200)
    grade: Grade
    personal_data: bool


class WarrantRules(_Frozen):
    """What the policy set decided for the job at admission (asked of Cedar, not computed):
    whether the job could be admitted without differential privacy or without secure
    aggregation, its tier's epsilon cap and least number of participants, and which
    policies asked for a regulator's approval."""

    requires_dp: bool
    requires_secure_aggregation: bool
    dp_epsilon_cap: float
    min_participants: int = Field(ge=1)
    approval_by: tuple[str, ...] = ()


class KeyRecord(_Frozen):
    """A public key vouched for by a key the node already trusts: a regulator's key endorsed
    by the installation's regulator key, or a rotated operator key signed by the old one."""

    role: Literal["operator", "regulator"]
    principal: Id
    public_key: str = Field(pattern=r"^[A-Za-z0-9+/]{43}=$")
    time: str = Field(max_length=40)
    signed_by: Literal["operator", "regulator"]
    signature: str = Field(max_length=200)

    def statement(self) -> bytes:
        body = self.model_dump(mode="json", exclude={"signature"})
        return canonical_json({"domain": KEY_RECORD_DOMAIN, **body})


class Approval(_Frozen):
    """A regulator's signed approval of one filed spec and one filed code bundle."""

    regulator: Id
    time: str = Field(max_length=40)
    note_sha256: Sha256Hex
    signature: str = Field(max_length=200)
    key: KeyRecord | None = None
    """The approving regulator's key record (None for the installation's own regulator)."""


def approval_statement(
    job_id: str, spec_hash: str, code_bundle: str, regulator: str, time: str, note_digest: str
) -> bytes:
    """The bytes a regulator signs to approve a job: the job, its filed spec and code, who,
    when, and the hash of the note (:func:`note_sha256`; the note stays in the registry)."""
    return canonical_json(
        {
            "domain": APPROVAL_DOMAIN,
            "job": job_id,
            "spec_sha256": spec_hash,
            "code_bundle": code_bundle,
            "regulator": regulator,
            "time": time,
            "note_sha256": note_digest,
        }
    )


def note_sha256(note: str) -> str:
    return hashlib.sha256(note.encode("utf-8")).hexdigest()


class Warrant(_Frozen):
    domain: Literal["sandbox-warrant/v1"] = WARRANT_DOMAIN
    job_id: JobId
    engineer: Id
    spec: dict[str, Any]
    spec_hash: Sha256Hex
    code_bundle: Sha256Hex
    tier: Tier
    rules: WarrantRules
    policy_set: Sha256Hex
    admission_index: int = Field(ge=0)
    datasets: tuple[WarrantDataset, ...] = Field(min_length=1)
    issued_at: str = Field(max_length=40)
    approval: Approval | None = None
    signature: str = Field(default="", max_length=200)

    # ------------------------------------------------------------------ reading
    @classmethod
    def parse(cls, text: str) -> Warrant:
        if len(text.encode("utf-8")) > MAX_WARRANT_BYTES:
            raise WarrantError("the warrant is too large")
        try:
            return cls.model_validate(json.loads(text))
        except (ValueError, ValidationError) as exc:
            raise WarrantError(f"the warrant is malformed: {str(exc)[:300]}") from None

    def text(self) -> str:
        """The warrant as it travels: canonical JSON."""
        return canonical_json(self.model_dump(mode="json")).decode("utf-8")

    def digest(self) -> str:
        """The warrant's hash (over everything, the signatures included)."""
        return hashlib.sha256(self.text().encode("utf-8")).hexdigest()

    def body(self) -> bytes:
        """What the operator signs: everything but its own signature."""
        return canonical_json(self.model_dump(mode="json", exclude={"signature"}))

    def job_spec(self) -> JobSpec:
        """The filed spec, checked against its hash."""
        try:
            spec = JobSpec.model_validate(self.spec)
        except ValidationError as exc:
            raise WarrantError(f"the warrant's spec is not a job spec: {exc}") from None
        if spec.spec_hash != self.spec_hash:
            raise WarrantError("the warrant's spec does not match the spec hash it names")
        return spec

    def dataset_of(self, company: str) -> WarrantDataset | None:
        return next((d for d in self.datasets if d.company == company), None)

    # ------------------------------------------------------------------ signing
    def signed(self, operator_key: Any) -> Warrant:
        unsigned = self.model_copy(update={"signature": ""})
        return unsigned.model_copy(
            update={"signature": identity.sign(operator_key, unsigned.body())}
        )

    def check_signatures(self, operator: str, regulator: str) -> None:
        """The operator's signature, and, when the rules ask for an approval, the approving
        regulator's: by the installation's regulator key (``regulator``) itself or by a key
        it endorsed. Raises :class:`WarrantError` naming what failed."""
        if not identity.verify(operator, self.body(), self.signature):
            raise WarrantError(
                f"the warrant of job {self.job_id} is not signed by the operator key this "
                "node pinned"
            )
        if self.rules.approval_by and self.approval is None:
            raise WarrantError(
                f"job {self.job_id} needs a regulator's approval "
                f"({', '.join(self.rules.approval_by)}) and its warrant carries none"
            )
        if self.approval is not None:
            approver = approver_key(self.approval, regulator)
            statement = approval_statement(
                self.job_id,
                self.spec_hash,
                self.code_bundle,
                self.approval.regulator,
                self.approval.time,
                self.approval.note_sha256,
            )
            if not identity.verify(approver, statement, self.approval.signature):
                raise WarrantError(
                    f"the approval of job {self.job_id} is not signed by regulator "
                    f"{self.approval.regulator}"
                )


def approver_key(approval: Approval, installation_regulator: str) -> str:
    """The public key an approval must verify with."""
    if approval.key is None:
        return installation_regulator
    record = approval.key
    if record.role != "regulator" or record.principal != approval.regulator:
        raise WarrantError(f"the key record is not regulator {approval.regulator}'s")
    if record.signed_by != "regulator" or not identity.verify(
        installation_regulator, record.statement(), record.signature
    ):
        raise WarrantError(
            f"regulator {approval.regulator}'s key is not endorsed by the installation's "
            "regulator key this node pinned"
        )
    return record.public_key


def endorse_key(
    signer: Any, role: Literal["operator", "regulator"], principal: str, public_key: str, time: str
) -> KeyRecord:
    """A key record for ``principal``'s ``public_key``, signed by ``signer`` (the
    installation's regulator key for a regulator; the old operator key for a rotation)."""
    signed_by: Literal["operator", "regulator"] = "regulator" if role == "regulator" else "operator"
    unsigned = KeyRecord(
        role=role,
        principal=principal,
        public_key=public_key,
        time=time,
        signed_by=signed_by,
        signature="",
    )
    return unsigned.model_copy(update={"signature": identity.sign(signer, unsigned.statement())})
