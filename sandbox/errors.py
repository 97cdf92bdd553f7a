"""Errors of the sandbox's services; every face maps them to its answer (an HTTP problem, a
CLI message, a console page)."""

from sandbox.vocabulary import ID_RULE, is_id


class SandboxError(Exception):
    """Base class; ``status`` is the HTTP status a face should answer with."""

    status = 400
    title = "Request cannot be carried out"


class NotFound(SandboxError):
    status = 404
    title = "Not found"


class Conflict(SandboxError):
    status = 409
    title = "Conflict with the current state"


class Invalid(SandboxError):
    status = 422
    title = "Invalid request"


class Forbidden(SandboxError):
    """A policy decision denied the request; ``decision_id`` names it in the ledger and
    ``reasons`` say why, as the policies put it."""

    status = 403
    title = "Denied by policy"

    def __init__(
        self,
        message: str,
        decision_id: str | None = None,
        reasons: tuple[str, ...] = (),
        unrecorded: bool = False,
    ) -> None:
        super().__init__(message)
        self.decision_id = decision_id
        self.reasons = reasons
        self.unrecorded = unrecorded
        """True when the denial is the ledger's failure to record the decision."""


def check_id(value: str, what: str) -> str:
    """``value`` if it is an id of the sandbox's one grammar; Invalid otherwise."""
    if not is_id(value):
        raise Invalid(f"{what} {value!r} {ID_RULE}")
    return value


class Unauthenticated(SandboxError):
    """The request does not prove who sent it: no token, or one that is unknown, expired or
    revoked, or a signature that does not verify."""

    status = 401
    title = "Not authenticated"
