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
    status = 403
    title = "Denied by policy"
