"""Errors of the registry's service functions; the API maps them to problem responses."""


class RegistryError(Exception):
    """Base class; ``status`` is the HTTP status a face should answer with."""

    status = 400
    title = "Request cannot be carried out"


class NotFound(RegistryError):
    status = 404
    title = "Not found"


class Conflict(RegistryError):
    status = 409
    title = "Conflict with the current state"


class Invalid(RegistryError):
    status = 422
    title = "Invalid request"


class Forbidden(RegistryError):
    """A policy decision denied the request; ``decision_id`` names it in the ledger and
    ``reasons`` say why, as the policies put it."""

    status = 403
    title = "Denied by policy"

    def __init__(
        self, message: str, decision_id: str | None = None, reasons: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.decision_id = decision_id
        self.reasons = reasons
