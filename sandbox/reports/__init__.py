"""Compliance reports built from the registry and the ledger."""
