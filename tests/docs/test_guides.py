"""The guides stay true to the product: every ``sandbox …`` command the README and the guides
in ``docs/`` show exists, with every option they give it. A renamed command or option fails
here before a user meets it."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import typer.main

from sandbox.cli import app

ROOT = Path(__file__).resolve().parents[2]
GUIDES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```")
INLINE = re.compile(r"`(sandbox [^`]+)`")


def command_lines(text: str) -> Iterator[str]:
    """``sandbox …`` lines of fenced blocks (with their ``\\`` continuations) and inline spans."""
    in_fence = False
    pending = ""
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            in_fence = not in_fence
            continue
        if in_fence:
            stripped = line.strip().removeprefix("$ ")
            if pending:
                pending += " " + stripped
            elif stripped.startswith("sandbox "):
                pending = stripped
            if pending and not pending.endswith("\\"):
                yield pending
                pending = ""
            elif pending:
                pending = pending[:-1]
        else:
            yield from INLINE.findall(line)


def documented_commands() -> list[tuple[str, str]]:
    found = []
    for guide in GUIDES:
        for line in command_lines(guide.read_text(encoding="utf-8")):
            found.append((guide.name, line))
    return found


def resolve(line: str) -> tuple[click.Command, list[str]]:
    """The click command a line names, and the words left after its name."""
    words = shlex.split(line, comments=True)[1:]
    command: click.Command = typer.main.get_command(app)
    while isinstance(command, click.Group) and words and not words[0].startswith("-"):
        if words[0] == "…":  # "sandbox company …": the group itself
            return command, []
        sub = command.get_command(click.Context(command), words[0])
        if sub is None:
            raise AssertionError(f"no command {words[0]!r} in {line!r}")
        command, words = sub, words[1:]
    return command, words


def options_of(command: click.Command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(param.opts)
        names.update(param.secondary_opts)
    return names


COMMANDS = documented_commands()


def test_the_guides_show_commands() -> None:
    """The extraction finds the guides' commands, so the check below checks something."""
    guides = {guide for guide, _ in COMMANDS}
    assert {"README.md", "companies.md", "engineers.md", "regulators.md", "operators.md"} <= guides
    assert len(COMMANDS) > 30


@pytest.mark.parametrize(
    ("guide", "line"), COMMANDS, ids=[f"{guide}:{line[:60]}" for guide, line in COMMANDS]
)
def test_documented_command_exists(guide: str, line: str) -> None:
    command, words = resolve(line)
    known = options_of(command)
    for word in words:
        if word.startswith("--") or re.fullmatch(r"-[a-zA-Z]", word):
            assert word.split("=", 1)[0] in known, f"{guide}: {line!r}: no option {word}"


def test_a_wrong_option_is_caught() -> None:
    command, _ = resolve("sandbox audit verify --no-such-option")
    assert "--no-such-option" not in options_of(command)
    with pytest.raises(AssertionError, match="no command"):
        resolve("sandbox audit no-such-command")
