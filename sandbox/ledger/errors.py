"""The ledger's errors. Every one is a :class:`LedgerError`, so a caller that must not act
unrecorded can catch that one class and deny."""

from __future__ import annotations


class LedgerError(Exception):
    """The ledger could not do what was asked; nothing was half-done."""


class RecordError(LedgerError, ValueError):
    """A record, or an entry's bytes, does not fit the ledger's schema."""


class CheckpointError(LedgerError, ValueError):
    """A checkpoint note is malformed, unsigned by the expected key, or for another log."""


class LedgerWriteError(LedgerError):
    """An append or a checkpoint failed and nothing was written. Treat the action as denied."""


class LedgerIntegrityError(LedgerError):
    """What is stored contradicts itself or a signed checkpoint; the ledger refuses to go on."""


class EntryNotFound(LedgerError, LookupError):
    """No entry at that index (yet)."""


class BundleError(LedgerError, ValueError):
    """A bundle cannot be written (the folder is not empty) or read at all."""
