"""Principals and their credentials: who acts, registering them, their API tokens.

A principal is a company (its id and the Ed25519 key it joined with) or an engineer, regulator
or operator registered with a public key by the operator. A principal proves possession of
its key by a signed token request (:mod:`sandbox.identity.requests`) and gets a bearer token:
32 random bytes, shown once, stored only as their SHA-256, with an expiry, revocable. A signed
request serves for one token only (its digest is stored unique).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from policies.facts import AccountFacts, EngineerFacts, OperatorFacts, RegulatorFacts
from sandbox import identity
from sandbox.errors import Conflict, Invalid, NotFound, Unauthenticated, check_id
from sandbox.governance import Annotation, Governance, company_facts
from sandbox.identity.requests import (
    CLOCK_SKEW,
    JOIN_DOMAIN,
    NONCE_PATTERN,
    token_request_message,
)
from sandbox.ledger import LedgerRecord, Resource
from sandbox.registry import companies as company_store
from sandbox.registry import principals as store
from sandbox.registry.models import ApiToken, Principal
from sandbox.services.base import actor_of, authorize, id_available, read_registry
from sandbox.services.warrants import endorsement_for
from sandbox.utc import rfc3339, utcnow
from sandbox.vocabulary import INSTALLATION_REGULATOR, OPERATOR_ID, REGISTERED_ROLES, ROLES, new_id

TOKEN_PATTERN = r"^sbx_[A-Za-z0-9_-]{43}$"
TOKEN_PREFIX = "sbx_"
DEFAULT_TTL = timedelta(hours=8)
MAX_TTL = timedelta(days=30)

_NONCE = re.compile(NONCE_PATTERN)
_TOKEN = re.compile(TOKEN_PATTERN)
_FACTS = {"engineer": EngineerFacts, "regulator": RegulatorFacts, "operator": OperatorFacts}


def check_role(role: str) -> str:
    if role not in ROLES:
        raise Invalid(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role


@dataclass(frozen=True)
class Who:
    """An authenticated principal as the policy sees it: ``facts`` are its policy facts (for
    a company, read from the registry now), ``account`` the facts of its API account."""

    role: str
    id: str
    organisation: str | None
    public_key: str
    status: str
    facts: Any

    @property
    def account(self) -> AccountFacts:
        return AccountFacts(role=self.role, holder=self.id, status=self.status)


def resolve(gov: Governance, role: str, principal_id: str) -> Who:
    """The principal ``principal_id`` of ``role``; raises NotFound if there is none."""
    check_role(role)
    if role == "company":
        company = company_store.find_company(gov.engine, principal_id)
        if company is None:
            raise NotFound(f"no company {principal_id!r}")
        facts = company_facts(company)
        return Who(role, company.id, company.id, company.public_key, facts.status, facts=facts)
    principal = store.find_principal(gov.engine, principal_id)
    if principal is None or principal.role != role:
        raise NotFound(f"no {role} {principal_id!r}")
    return Who(
        role,
        principal.id,
        principal.organisation,
        principal.public_key,
        principal.status,
        facts=_FACTS[role](principal.id),
    )


def acting_as(gov: Governance, role: str, principal_id: str) -> Any:
    """The policy facts of whoever the sandbox's own CLI acts as. A company is read from the
    registry (so the policy sees its status); others are taken by their id."""
    check_role(role)
    if role == "company":
        return resolve(gov, role, principal_id).facts
    check_id(principal_id, f"{role} id")
    return _FACTS[role](principal_id)


def operator(gov: Governance) -> OperatorFacts:
    """The operator principal (created at first start from the sandbox's operator key)."""
    ensure_operator(gov)
    return OperatorFacts(OPERATOR_ID)


# ------------------------------------------------------------------------------ principals
def _record(action: str, actor: Any, account: AccountFacts, **details: Any) -> LedgerRecord:
    return LedgerRecord(
        action=action,
        actor=actor_of(actor),
        resource=Resource(kind="key", id=account.id),
        details=details,
    )


def check_registration(
    principal_id: str, role: str, public_key: str, organisation: str | None = None
) -> None:
    check_id(principal_id, "principal id")
    check_role(role)
    if organisation is not None:
        check_id(organisation, "organisation")
    company_store.check_public_key(public_key)
    if role not in REGISTERED_ROLES:
        raise Invalid(
            f"role {role!r} cannot be registered; choose one of {', '.join(REGISTERED_ROLES)} "
            "(companies become principals by joining)"
        )


def register_principal(
    gov: Governance,
    actor: Any,
    principal_id: str,
    role: str,
    public_key: str,
    organisation: str | None = None,
    endorsement: dict[str, Any] | None = None,
) -> Principal:
    """Register an engineer, regulator or operator with its Ed25519 public key. A regulator's
    key is endorsed by the installation's regulator key, so that the companies' nodes trust
    the approvals it signs (:mod:`sandbox.services.warrants`): ``endorsement`` is one made on
    the regulator's machine; without it, the key this home keeps signs one."""
    check_registration(principal_id, role, public_key, organisation)
    if endorsement is not None and role != "regulator":
        raise Invalid(f"only a regulator's key is endorsed; {principal_id} is to be a(n) {role}")
    if principal_id == INSTALLATION_REGULATOR:
        raise Invalid(
            f"{INSTALLATION_REGULATOR!r} is the installation's own regulator (its key is the "
            "sandbox's regulator key); register others under their own ids"
        )
    account = AccountFacts(role=role, holder=principal_id)
    authorize(
        gov,
        actor,
        "register_principal",
        account,
        annotation=Annotation(resource_kind="key", resource_id=account.id),
    )
    if not id_available(gov, principal_id):
        raise Conflict(
            f"{principal_id!r} is taken (a company or another principal) or reserved: every "
            "principal has an id of its own"
        )
    registered = store.add_principal(
        gov.engine,
        Principal(
            id=principal_id,
            role=role,
            organisation=organisation,
            public_key=public_key,
            registered_by=actor.id,
            endorsement=endorsement_for(gov, principal_id, public_key, endorsement)
            if role == "regulator"
            else None,
        ),
    )
    gov.record(
        _record(
            "principal.registered",
            actor,
            account,
            public_key_id=identity.key_id(public_key),
        )
    )
    return registered


def ensure_operator(gov: Governance) -> Principal:
    """The installation's own principals, created at first start (its bootstrap, not a
    decision: no principal exists yet to decide on): the operator, from the sandbox's operator
    key, and the installation's regulator, from the sandbox's regulator key (so that every
    face names it alike: ``--as regulator``, ``sandbox token issue regulator``). Returns the
    operator."""
    _ensure(gov, INSTALLATION_REGULATOR, "regulator", gov.regulator_public_key)
    key = identity.sandbox_key(gov.settings.keys_dir, "operator")
    return _ensure(gov, OPERATOR_ID, "operator", identity.public_b64(key))


def _ensure(gov: Governance, principal_id: str, role: str, public_key: str) -> Principal:
    existing = store.find_principal(gov.engine, principal_id)
    if existing is not None:
        if existing.public_key != public_key:
            raise ValueError(
                f"the registry holds another key for {principal_id!r} than this installation's "
                f"({identity.key_id(existing.public_key)}, not {identity.key_id(public_key)}): "
                "a moved or replaced key is not adopted silently (its tokens, and the keys the "
                "companies' nodes pinned, rest on the registered one)"
            )
        return existing
    try:
        return store.add_principal(
            gov.engine,
            Principal(id=principal_id, role=role, public_key=public_key, registered_by=OPERATOR_ID),
        )
    except Conflict:  # another process created it first
        return store.get_principal(gov.engine, principal_id)


def list_principals(gov: Governance, actor: Any) -> list[Principal]:
    read_registry(gov, actor, "principals")
    return store.all_principals(gov.engine)


def disable_principal(gov: Governance, actor: Any, principal_id: str) -> Principal:
    """Disable a principal: its tokens are revoked and it gets no new ones."""
    check_id(principal_id, "principal id")
    found = store.find_principal(gov.engine, principal_id)
    # Only registered principals can be disabled; an unknown id is judged as an engineer's.
    account = _decide_account(
        gov, actor, "register_principal", found.role if found else "engineer", principal_id
    )
    disabled, revoked = store.mark_disabled(gov.engine, principal_id)
    gov.record(_record("principal.disabled", actor, account, tokens_revoked=revoked))
    return disabled


# ---------------------------------------------------------------------------------- tokens
def check_timestamp(timestamp: str, now: datetime, skew: timedelta = CLOCK_SKEW) -> None:
    try:
        moment = datetime.fromisoformat(timestamp)
        if moment.tzinfo is None:
            raise ValueError("no time zone")
        off = abs(now - moment)
    except (ValueError, OverflowError) as exc:
        raise Invalid(
            f"timestamp {timestamp!r} is not an RFC 3339 time with a zone, e.g. "
            "2026-01-01T12:00:00Z"
        ) from exc
    if off > skew:
        raise Unauthenticated(
            f"the signed request's timestamp is {int(off.total_seconds())} s away from the "
            f"server's clock (at most {int(skew.total_seconds())} s); sign a fresh request"
        )


def verify_token_request(
    gov: Governance,
    role: str,
    principal_id: str,
    timestamp: str,
    nonce: str,
    signature: str,
    ttl_seconds: int,
    now: datetime | None = None,
) -> tuple[Who, str]:
    """The principal a signed token request proves, and the request's digest (the token's
    life asked for is part of what was signed)."""
    check_role(role)
    check_id(principal_id, "principal_id")
    if not _NONCE.match(nonce):
        raise Invalid("nonce must be 16 to 128 characters of letters, digits, '_' or '-'")
    check_timestamp(timestamp, now or utcnow())
    message = token_request_message(role, principal_id, timestamp, nonce, ttl_seconds)
    refusal = Unauthenticated(
        f"no {role} {principal_id!r} with a key that verifies this signature; check the id, "
        "the role and the key you signed with"
    )
    try:
        who = resolve(gov, role, principal_id)
    except NotFound:
        raise refusal from None
    if not identity.verify(who.public_key, message, signature):
        raise refusal
    return who, hashlib.sha256(message).hexdigest()


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    """A new token: ``token`` is the secret, shown once; ``record`` what is stored of it."""

    token: str
    record: ApiToken


def _issue(
    gov: Governance, who: Who, ttl: timedelta, proof: str | None, channel: str
) -> IssuedToken:
    if not timedelta(0) < ttl <= MAX_TTL:
        raise Invalid(f"a token lives between 1 second and {MAX_TTL.days} days")
    authorize(
        gov,
        who.facts,
        "manage_tokens",
        who.account,
        annotation=Annotation(resource_kind="key", resource_id=who.account.id),
    )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    record = store.add_token(
        gov.engine,
        ApiToken(
            id=new_id("tok"),
            role=who.role,
            principal_id=who.id,
            token_sha256=token_digest(token),
            proof_sha256=proof,
            channel=channel,
            created_at=now,
            expires_at=now + ttl,
        ),
    )
    gov.record(
        _record(
            "token.issued",
            who.facts,
            who.account,
            token_id=record.id,
            channel=channel,
            expires=rfc3339(record.expires_at),
        )
    )
    return IssuedToken(token, record)


def issue_token(
    gov: Governance,
    role: str,
    principal_id: str,
    timestamp: str,
    nonce: str,
    signature: str,
    ttl: timedelta = DEFAULT_TTL,
) -> IssuedToken:
    """A token for a principal that proved possession of its key by a signed request."""
    seconds = int(ttl.total_seconds())
    who, proof = verify_token_request(gov, role, principal_id, timestamp, nonce, signature, seconds)
    return _issue(gov, who, ttl, proof, "signed-request")


def issue_token_locally(
    gov: Governance, role: str, principal_id: str, ttl: timedelta = DEFAULT_TTL
) -> IssuedToken:
    """A token issued on the sandbox's own machine (the CLI), for tests and demos."""
    try:
        who = resolve(gov, role, principal_id)
    except NotFound as exc:
        raise NotFound(f"{exc}; register it first (`sandbox principal add`)") from None
    return _issue(gov, who, ttl, None, "local")


def authenticate(gov: Governance, token: str, now: datetime | None = None) -> tuple[Who, ApiToken]:
    """The principal a bearer token stands for. Refuses tokens that are malformed, unknown,
    expired or revoked, and the tokens of a principal that is no longer registered or was
    disabled (a suspended company is the policy's to refuse, with its reason)."""
    if not isinstance(token, str) or not _TOKEN.match(token):
        raise Unauthenticated("the token is not a sandbox API token")
    record = store.token_by_digest(gov.engine, token_digest(token))
    if record is None:
        raise Unauthenticated("the token is not valid")
    return _holder(gov, record, now), record


def reauthenticate(gov: Governance, token_id: str) -> Who:
    """The principal of a token already accepted once, checked again now (a long-lived
    stream asks every few seconds): revoked, expired or disabled is refused."""
    try:
        record = store.get_token(gov.engine, token_id)
    except NotFound:
        raise Unauthenticated("the token is not valid") from None
    return _holder(gov, record, None)


def _holder(gov: Governance, record: ApiToken, now: datetime | None) -> Who:
    if record.revoked_at is not None:
        raise Unauthenticated("the token was revoked; request a new one")
    if record.expires_at <= (now or utcnow()):
        raise Unauthenticated("the token has expired; request a new one")
    try:
        who = resolve(gov, record.role, record.principal_id)
    except NotFound:
        raise Unauthenticated("the token's principal is no longer registered") from None
    if who.role != "company" and who.status != "active":
        raise Unauthenticated(f"{who.role} {who.id!r} is disabled")
    return who


def open_session(gov: Governance, who: Who) -> None:
    """A browser signs in with a token: decided like any use of one's own tokens."""
    authorize(
        gov,
        who.facts,
        "manage_tokens",
        who.account,
        annotation=Annotation(
            resource_kind="key", resource_id=who.account.id, details={"view": "session"}
        ),
    )


def _account(gov: Governance, role: str, principal_id: str) -> AccountFacts | None:
    """The account of a principal, or None when there is no such principal."""
    try:
        return resolve(gov, role, principal_id).account
    except NotFound:
        return None


def _decide_account(
    gov: Governance, actor: Any, action: str, role: str, principal_id: str
) -> AccountFacts:
    """Decide ``action`` on a principal's account. An account that does not exist is judged as
    if it did (active): whether it exists is told only to whom the policy would allow."""
    account = _account(gov, role, principal_id)
    judged = account or AccountFacts(role=role, holder=principal_id)
    authorize(
        gov,
        actor,
        action,
        judged,
        annotation=Annotation(resource_kind="key", resource_id=judged.id),
    )
    if account is None:
        raise NotFound(f"no {role} {principal_id!r}")
    return account


def list_tokens(gov: Governance, actor: Any, role: str, principal_id: str) -> list[ApiToken]:
    """The tokens a principal was issued (never the tokens themselves)."""
    check_role(role)
    _decide_account(gov, actor, "manage_tokens", role, principal_id)
    return store.tokens_of(gov.engine, role, principal_id)


def revoke_token(gov: Governance, actor: Any, token_id: str) -> ApiToken:
    """Revoke a token: one's own, or (the operator) anyone's."""
    token = store.get_token(gov.engine, token_id)
    account = _account(gov, token.role, token.principal_id) or AccountFacts(
        role=token.role, holder=token.principal_id, status="removed"
    )
    authorize(
        gov,
        actor,
        "manage_tokens",
        account,
        annotation=Annotation(resource_kind="key", resource_id=account.id),
    )
    revoked = store.mark_token_revoked(gov.engine, token_id)
    gov.record(_record("token.revoked", actor, account, token_id=token_id))
    return revoked


# ------------------------------------------------------------------------------ joining
def verify_join(public_key: str, signed_at: str, body: bytes, signature: str | None) -> None:
    """A join request must be signed by the key it registers, recently: proof that the
    company holds that key. Raises Unauthenticated otherwise."""
    if not signature:
        raise Unauthenticated(
            "a join request is signed with the company's key: put the base64 signature over "
            "'sandbox-api-join/v1\\n' + the body in the X-Sandbox-Signature header"
        )
    check_timestamp(signed_at, utcnow())
    if not identity.verify(public_key, JOIN_DOMAIN + body, signature):
        raise Unauthenticated(
            "the X-Sandbox-Signature does not verify with the public key in the request; sign "
            "the exact body bytes you send"
        )
