"""Canonical JSON: the RFC 8785 (JCS) serialisation, the one form the sandbox hashes and
signs (job specs, plans, receipts, policy facts, ledger entries, local logs, bundles).

A leaf module (standard library and ``rfc8785`` only), so that ``policies`` may use it too.
"""

from __future__ import annotations

import json
import re
from typing import Any

import rfc8785

_STRING = re.compile(r'"[^"\\]*"')
_WORD = re.compile(r"true|false|null")
_STRUCTURE_AND_INTEGERS = re.compile(r"[\[\]{},:0-9-]*")
_LONG_INTEGER = re.compile(r"[0-9]{16}")

CanonicalizationError = rfc8785.CanonicalizationError


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 bytes of ``value`` (JSON types only), quickly where that is provably the
    same.

    When the compact, sorted-key ``json.dumps`` text is pure ASCII, has no escapes and,
    outside its strings, holds nothing but structure, ``true``/``false``/``null`` and
    integers of at most 15 digits (so no floats, and only integers within I-JSON), it *is*
    the RFC 8785 form: keys sort alike in UTF-16 and in code points, and such strings and
    integers print alike. That covers every document without a float. Anything else (floats,
    which RFC 8785 prints the ECMAScript way; escapes; non-ASCII text; large integers) goes
    through the ``rfc8785`` package.
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if text.isascii() and "\\" not in text:
        skeleton = _WORD.sub("", _STRING.sub("", text))
        if _STRUCTURE_AND_INTEGERS.fullmatch(skeleton) and not _LONG_INTEGER.search(skeleton):
            return text.encode("ascii")
    return rfc8785.dumps(value)


def canonical_text(value: Any) -> str:
    return canonical_json(value).decode("utf-8")


def parse_canonical(data: bytes) -> tuple[Any, bool]:
    """The JSON value ``data`` holds, and whether ``data`` is its RFC 8785 form; raises
    ``ValueError`` when ``data`` is not JSON in UTF-8.

    The common case is decided in one parse and one ``json.dumps``: a pure-ASCII text
    without escapes, floats or integers of more than 15 digits is canonical exactly when it
    is its own compact, sorted-key dump (the argument of :func:`canonical_json`). Anything
    else is compared with :func:`canonical_json` of the parsed value."""
    unusual: list[str] = []

    def on_float(literal: str) -> float:
        unusual.append(literal)
        return float(literal)

    def on_int(literal: str) -> int:
        if len(literal.lstrip("-")) > 15:
            unusual.append(literal)
        return int(literal)

    text = data.decode("utf-8")
    value = json.loads(text, parse_float=on_float, parse_int=on_int)
    if not unusual and text.isascii() and "\\" not in text:
        return value, json.dumps(value, sort_keys=True, separators=(",", ":")) == text
    try:
        return value, canonical_json(value) == data
    except CanonicalizationError:
        return value, False


def is_canonical_json(data: bytes) -> bool:
    """Whether ``data`` is the RFC 8785 form of the JSON value it holds."""
    try:
        return parse_canonical(data)[1]
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return False
