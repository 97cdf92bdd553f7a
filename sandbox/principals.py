"""The principals of the API and their credentials.

A principal is a company (its id and the Ed25519 key it joined with, in the company table) or
an engineer, regulator or operator registered with a public key by the operator (the
principal table). A principal proves possession of its key by signing a token request::

    sandbox-api-token-request/v1
    <role>
    <principal id>
    <timestamp, RFC 3339 UTC, within five minutes of the server's clock>
    <nonce, 16 to 128 URL-safe characters>

and gets a bearer token: 32 random bytes, shown once, stored only as their SHA-256, with an
expiry, revocable. A signed request serves for one token only (its digest is stored unique).

These are the service functions over the two tables; deciding who may do what is the policy's
business (see :mod:`sandbox.operations`).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from policies.facts import AccountFacts, EngineerFacts, OperatorFacts, RegulatorFacts
from sandbox import identity
from sandbox.db import session_scope
from sandbox.governance import company_facts
from sandbox.registry.errors import Conflict, Invalid, NotFound, RegistryError
from sandbox.registry.models import ApiToken, Company, Principal, utcnow
from sandbox.registry.service import as_utc, check_id, new_id

ROLES = ("company", "engineer", "regulator", "operator")
REGISTERED_ROLES = ("engineer", "regulator", "operator")
OPERATOR_ID = "operator"

NONCE_PATTERN = r"^[A-Za-z0-9_-]{16,128}$"
TOKEN_PATTERN = r"^sbx_[A-Za-z0-9_-]{43}$"

TOKEN_PREFIX = "sbx_"
TOKEN_REQUEST_DOMAIN = "sandbox-api-token-request/v1"
CLOCK_SKEW = timedelta(minutes=5)
DEFAULT_TTL = timedelta(hours=8)
MAX_TTL = timedelta(days=30)

_NONCE = re.compile(NONCE_PATTERN)
_TOKEN = re.compile(TOKEN_PATTERN)
_FACTS = {"engineer": EngineerFacts, "regulator": RegulatorFacts, "operator": OperatorFacts}


class Unauthenticated(RegistryError):
    """The request does not prove who sent it: no token, or one that is unknown, expired or
    revoked, or a signature that does not verify."""

    status = 401
    title = "Not authenticated"


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


def resolve(engine: Engine, role: str, principal_id: str) -> Who:
    """The principal ``principal_id`` of ``role``; raises NotFound if there is none."""
    check_role(role)
    with session_scope(engine) as session:
        if role == "company":
            company = session.get(Company, principal_id)
            if company is None:
                raise NotFound(f"no company {principal_id!r}")
            facts = company_facts(company)
            return Who(role, company.id, company.id, company.public_key, facts.status, facts=facts)
        principal = session.get(Principal, principal_id)
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


# ------------------------------------------------------------------------------ principals
def check_registration(
    principal_id: str, role: str, public_key: str, organisation: str | None = None
) -> None:
    check_id(principal_id, "principal id")
    check_role(role)
    if organisation is not None:
        check_id(organisation, "organisation")
    try:
        identity.decode_public_key_b64(public_key)
    except ValueError as exc:
        raise Invalid(f"public_key: {exc}") from exc


def register(
    engine: Engine,
    principal_id: str,
    role: str,
    public_key: str,
    registered_by: str,
    organisation: str | None = None,
) -> Principal:
    check_registration(principal_id, role, public_key, organisation)
    if role not in REGISTERED_ROLES:
        raise Invalid(
            f"role {role!r} cannot be registered; choose one of {', '.join(REGISTERED_ROLES)} "
            "(companies become principals by joining)"
        )
    with session_scope(engine) as session:
        if session.get(Principal, principal_id) is not None:
            raise Conflict(f"a principal with id {principal_id!r} is registered already")
        principal = Principal(
            id=principal_id,
            role=role,
            organisation=organisation,
            public_key=public_key,
            registered_by=registered_by,
        )
        session.add(principal)
        return principal


def get_principal(engine: Engine, principal_id: str) -> Principal:
    with session_scope(engine) as session:
        principal = session.get(Principal, principal_id)
    if principal is None:
        raise NotFound(f"no principal {principal_id!r}")
    return principal


def list_principals(engine: Engine) -> list[Principal]:
    with session_scope(engine) as session:
        return list(session.exec(select(Principal).order_by(Principal.id)).all())


def disable(engine: Engine, principal_id: str) -> tuple[Principal, int]:
    """Disable a principal and revoke every token it holds, in one transaction; returns the
    principal and how many tokens were revoked."""
    now = utcnow()
    with session_scope(engine) as session:
        principal = session.get(Principal, principal_id)
        if principal is None:
            raise NotFound(f"no principal {principal_id!r}")
        if principal.status != "active":
            raise Conflict(f"principal {principal_id!r} is disabled already")
        principal.status = "disabled"
        principal.disabled_at = now
        session.add(principal)
        live = session.exec(
            select(ApiToken).where(
                ApiToken.principal_id == principal_id,
                ApiToken.role == principal.role,
                ApiToken.revoked_at.is_(None),  # type: ignore[union-attr]
            )
        ).all()
        for token in live:
            token.revoked_at = now
            session.add(token)
        return principal, len(live)


def ensure_operator(engine: Engine, keys_dir: Any) -> Principal:
    """The operator principal, created at first start from the sandbox's operator key."""
    with session_scope(engine) as session:
        existing = session.get(Principal, OPERATOR_ID)
    if existing is not None:
        return existing
    key = identity.sandbox_key(keys_dir, "operator")
    try:
        return register(engine, OPERATOR_ID, "operator", identity.public_b64(key), OPERATOR_ID)
    except Conflict:  # another process created it first
        return get_principal(engine, OPERATOR_ID)


# ---------------------------------------------------------------------------------- tokens
def token_request_message(role: str, principal_id: str, timestamp: str, nonce: str) -> bytes:
    """The bytes a principal signs to ask for a token."""
    return "\n".join((TOKEN_REQUEST_DOMAIN, role, principal_id, timestamp, nonce)).encode()


def sign_token_request(
    key: Ed25519PrivateKey,
    role: str,
    principal_id: str,
    now: datetime | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """A signed token request (the body of ``POST /auth/token``), made with the principal's
    own key on its own machine."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    nonce = nonce or secrets.token_urlsafe(24)
    signature = identity.sign(key, token_request_message(role, principal_id, stamp, nonce))
    return {
        "role": role,
        "principal_id": principal_id,
        "timestamp": stamp,
        "nonce": nonce,
        "signature": signature,
    }


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
    engine: Engine,
    role: str,
    principal_id: str,
    timestamp: str,
    nonce: str,
    signature: str,
    now: datetime | None = None,
) -> tuple[Who, str]:
    """The principal a signed token request proves, and the request's digest."""
    check_role(role)
    check_id(principal_id, "principal_id")
    if not _NONCE.match(nonce):
        raise Invalid("nonce must be 16 to 128 characters of letters, digits, '_' or '-'")
    check_timestamp(timestamp, now or datetime.now(UTC))
    message = token_request_message(role, principal_id, timestamp, nonce)
    refusal = Unauthenticated(
        f"no {role} {principal_id!r} with a key that verifies this signature; check the id, "
        "the role and the key you signed with"
    )
    try:
        who = resolve(engine, role, principal_id)
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


def create_token(
    engine: Engine,
    who: Who,
    ttl: timedelta = DEFAULT_TTL,
    proof_sha256: str | None = None,
    channel: str = "signed-request",
) -> IssuedToken:
    if not timedelta(0) < ttl <= MAX_TTL:
        raise Invalid(f"a token lives between 1 second and {MAX_TTL.days} days")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    record = ApiToken(
        id=new_id("tok"),
        role=who.role,
        principal_id=who.id,
        token_sha256=token_digest(token),
        proof_sha256=proof_sha256,
        channel=channel,
        created_at=now,
        expires_at=now + ttl,
    )
    try:
        with session_scope(engine) as session:
            session.add(record)
    except IntegrityError:
        raise Conflict(
            "this signed request was used already; sign a new one with a fresh nonce"
        ) from None
    return IssuedToken(token, record)


def authenticate(engine: Engine, token: str, now: datetime | None = None) -> tuple[Who, ApiToken]:
    """The principal a bearer token stands for. Refuses tokens that are malformed, unknown,
    expired or revoked, and the tokens of a principal that is no longer registered or was
    disabled (a suspended company is the policy's to refuse, with its reason)."""
    if not isinstance(token, str) or not _TOKEN.match(token):
        raise Unauthenticated("the token is not a sandbox API token")
    with session_scope(engine) as session:
        record = session.exec(
            select(ApiToken).where(ApiToken.token_sha256 == token_digest(token))
        ).first()
    if record is None:
        raise Unauthenticated("the token is not valid")
    if record.revoked_at is not None:
        raise Unauthenticated("the token was revoked; request a new one")
    if as_utc(record.expires_at) <= (now or datetime.now(UTC)):
        raise Unauthenticated("the token has expired; request a new one")
    try:
        who = resolve(engine, record.role, record.principal_id)
    except NotFound:
        raise Unauthenticated("the token's principal is no longer registered") from None
    if who.role != "company" and who.status != "active":
        raise Unauthenticated(f"{who.role} {who.id!r} is disabled")
    return who, record


def list_tokens(engine: Engine, role: str, principal_id: str) -> list[ApiToken]:
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(ApiToken)
                .where(ApiToken.role == role, ApiToken.principal_id == principal_id)
                .order_by(ApiToken.created_at, ApiToken.id)  # type: ignore[arg-type]
            ).all()
        )


def get_token(engine: Engine, token_id: str) -> ApiToken:
    with session_scope(engine) as session:
        record = session.get(ApiToken, token_id)
    if record is None:
        raise NotFound(f"no token {token_id!r}")
    return record


def revoke_token(engine: Engine, token_id: str) -> ApiToken:
    with session_scope(engine) as session:
        record = session.get(ApiToken, token_id)
        if record is None:
            raise NotFound(f"no token {token_id!r}")
        if record.revoked_at is not None:
            raise Conflict(f"token {token_id} was revoked already")
        record.revoked_at = utcnow()
        session.add(record)
        return record


# ------------------------------------------------------------------------------ joining
JOIN_DOMAIN = b"sandbox-api-join/v1\n"


def join_request(
    key: Ed25519PrivateKey,
    company_id: str,
    name: str,
    industry: str,
    manifest: Any = None,
    purposes: tuple[str, ...] = (),
    valid_days: int = 365,
    now: datetime | None = None,
) -> tuple[bytes, str]:
    """A company's signed join request: the body of ``POST /companies`` and the value of its
    ``X-Sandbox-Signature`` header. ``manifest`` is the filled-in dataset manifest, if any."""
    document = {
        "company_id": company_id,
        "name": name,
        "industry": industry,
        "public_key": identity.public_b64(key),
        "manifest": manifest.model_dump(mode="json") if manifest is not None else None,
        "purposes": list(purposes),
        "valid_days": valid_days,
        "signed_at": (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return body, sign_join(key, body)


def sign_join(key: Ed25519PrivateKey, body: bytes) -> str:
    """The company's signature over a join request's exact body bytes."""
    return identity.sign(key, JOIN_DOMAIN + body)


def verify_join(public_key: str, signed_at: str, body: bytes, signature: str | None) -> None:
    """A join request must be signed by the key it registers, recently: proof that the
    company holds that key. Raises Unauthenticated otherwise."""
    if not signature:
        raise Unauthenticated(
            "a join request is signed with the company's key: put the base64 signature over "
            "'sandbox-api-join/v1\\n' + the body in the X-Sandbox-Signature header"
        )
    check_timestamp(signed_at, datetime.now(UTC))
    if not identity.verify(public_key, JOIN_DOMAIN + body, signature):
        raise Unauthenticated(
            "the X-Sandbox-Signature does not verify with the public key in the request; sign "
            "the exact body bytes you send"
        )
