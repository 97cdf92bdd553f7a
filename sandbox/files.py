"""Files the sandbox reads and writes.

Writing: a crash never leaves half of a file (a temporary file beside the target, flushed to
disk, then renamed over the target, atomic on POSIX). Reading: the documents people write
(job specs, manifests) as TOML or JSON, with errors that name the file and the field."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` all at once; ``mode`` (e.g. 0o600) is set before the
    file appears under its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, document: Any, mode: int | None = None) -> None:
    """``document`` as indented JSON with sorted keys, written atomically."""
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    write_atomic(path, text.encode("utf-8"), mode)


@contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created 0600), across processes."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class DocumentError(ValueError):
    """A document that cannot be read: missing, not UTF-8, not TOML or JSON, malformed."""


def read_document(path: Path, what: str) -> Any:
    """The contents of a ``.toml`` or ``.json`` file; ``what`` names it in errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DocumentError(f"{what} file {path} does not exist") from None
    except UnicodeDecodeError:
        raise DocumentError(f"{what} file {path} is not UTF-8 text") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise DocumentError(f"{what} {path} is not valid {suffix[1:]}: {exc}") from None
    raise DocumentError(f"{what} {path} must be a .toml or .json file")


def validation_problems(exc: ValidationError, top: str = "document") -> list[str]:
    """Readable lines from a pydantic error, each naming its field:
    ``features.2.kind: Input should be ...``."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or top
        lines.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return lines
