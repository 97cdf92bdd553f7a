"""Algorithm filing: the code bundle a job runs, hashed.

A job is filed with two hashes: its spec's (``JobSpec.spec_hash``) and its code bundle's. The
code bundle is every file of the packages that run a job, at the coordinator and at a
company's node: ``clients``, ``coordinator``, ``policies`` and ``sandbox`` (which also holds
the Flower app manifest, ``sandbox/runtime/federation/flwrapp/pyproject.toml``). Flower's own app
bundle (FAB) hash does not cover code outside the app folder, and its signed-bundle check
(``--trusted-entities``) has no offline signing path in Flower 1.42, so the sandbox hashes the
code itself.

At admission the filing side hashes the code it runs; at a node, the company's gate hashes
the code *that node imported* (the package folders found on its ``sys.path``) and refuses any
task whose filed hash differs. Python byte-code caches and hidden files do not count.

    digest = SHA-256("sandbox-code-bundle/1\\n" + for each file, sorted by path:
                     "<package>/<relative path>\\0<SHA-256 of its bytes>\\n")
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

BUNDLE_PACKAGES = ("clients", "coordinator", "policies", "sandbox")
BUNDLE_FORMAT = "sandbox-code-bundle/1"
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class CodeBundle:
    digest: str
    files: tuple[tuple[str, str], ...]
    """(path, SHA-256) of every file, sorted by path; the path starts with the package."""

    def differences(self, other: CodeBundle) -> list[str]:
        """Paths that are added, removed or changed between the two bundles."""
        mine, theirs = dict(self.files), dict(other.files)
        return sorted(p for p in mine.keys() | theirs.keys() if mine.get(p) != theirs.get(p))


def _counted(relative: Path) -> bool:
    if any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
        return False
    return relative.suffix not in _SKIPPED_SUFFIXES


def bundle_of(packages: Mapping[str, Path]) -> CodeBundle:
    """The bundle of the given package folders (name → folder)."""
    files: list[tuple[str, str]] = []
    for name, folder in packages.items():
        for path in folder.rglob("*"):
            relative = path.relative_to(folder)
            if path.is_file() and not path.is_symlink() and _counted(relative):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                files.append((f"{name}/{relative.as_posix()}", digest))
    files.sort()
    outer = hashlib.sha256(f"{BUNDLE_FORMAT}\n".encode())
    for entry, digest in files:
        outer.update(f"{entry}\0{digest}\n".encode())
    return CodeBundle(digest=outer.hexdigest(), files=tuple(files))


def package_folders(names: tuple[str, ...] = BUNDLE_PACKAGES) -> dict[str, Path]:
    """Where this process imports each package from (without importing it)."""
    folders = {}
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(f"the package {name!r} of the code bundle is not importable")
        folders[name] = Path(next(iter(spec.submodule_search_locations))).resolve()
    return folders


@lru_cache(maxsize=1)
def running_bundle() -> CodeBundle:
    """The bundle of the code this process runs (computed once per process)."""
    return bundle_of(package_folders())


def code_root() -> Path:
    """The folder that holds the bundle's packages (put it first on a child's PYTHONPATH
    so that the processes a command starts run the same code as the command)."""
    roots = {folder.parent for folder in package_folders().values()}
    if len(roots) != 1:
        raise RuntimeError(f"the sandbox's packages come from several folders: {sorted(roots)}")
    return roots.pop()
