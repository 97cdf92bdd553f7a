"""Refusal notices: a company's signed statement that its node refused a task.

When a company's node refuses a task (a warrant that does not verify, a plan that differs from
the filed spec, code that is not the filed bundle, an app that is not the filed app, a budget
that would be passed, a model beyond the scoring allowance), it writes the refusal to its own
hash-chained log and signs a notice of it. The notice travels back in the refusal itself (the
reply's error), so that an honest coordinator puts it in the ledger; the company can also hand
its notices to the sandbox itself (``sandbox company refusals --deliver``, or
``POST /companies/{id}/refusals``), so that a refusal reaches the ledger even when whoever
asked for the task does not pass it on.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sandbox import identity
from sandbox.canonical import canonical_json

NOTICE_TYPE = "sandbox-refusal"
NOTICE_MARK = "\nsandbox-refusal-notice:"
MAX_REASON = 1500


class NoticeError(ValueError):
    """A notice that cannot be trusted: malformed, or not signed by the company it names."""


class RefusalNotice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = NOTICE_TYPE
    version: int = 1
    company: str = Field(max_length=64)
    job: str | None = Field(default=None, max_length=64)
    run: str | None = Field(default=None, max_length=64)
    task: str = Field(max_length=64)
    cause: str = Field(max_length=64)
    reason: str = Field(max_length=MAX_REASON)
    time: str = Field(max_length=40)
    log_index: int = Field(ge=0)
    log_hash: str = Field(max_length=64)

    def canonical(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))

    @property
    def notice_id(self) -> str:
        """The notice's id: the hash of its signed text (the same notice is recorded once)."""
        return hashlib.sha256(self.canonical()).hexdigest()


def sign_notice(key: Any, notice: RefusalNotice) -> tuple[str, str]:
    body = notice.canonical()
    return body.decode("utf-8"), identity.sign(key, body)


def verify_notice(text: str, signature: str, public_key: str, company: str) -> RefusalNotice:
    try:
        notice = RefusalNotice.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        raise NoticeError(f"the notice is not a refusal notice: {str(exc)[:200]}") from None
    if notice.type != NOTICE_TYPE or notice.canonical() != text.encode("utf-8"):
        raise NoticeError("the notice is not in canonical form")
    if notice.company != company:
        raise NoticeError(f"the notice names {notice.company}, not {company}")
    if not identity.verify(public_key, text.encode("utf-8"), signature):
        raise NoticeError(f"the notice's signature is not {company}'s")
    return notice


def attach(reason: str, text: str, signature: str) -> str:
    """A refusal's error reason with its signed notice after a marker line."""
    return f"{reason}{NOTICE_MARK}{json.dumps({'payload': text, 'signature': signature})}"


def detach(reason: str) -> tuple[str, tuple[str, str] | None]:
    """The readable reason and the signed notice (payload, signature), if one is attached."""
    head, mark, tail = reason.partition(NOTICE_MARK)
    if not mark:
        return reason, None
    try:
        raw = json.loads(tail)
        return head, (str(raw["payload"]), str(raw["signature"]))
    except (ValueError, KeyError, TypeError):
        return head, None
