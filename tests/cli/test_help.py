"""Every command's `--help` has an example, prints cleanly, and appears in README's command table.

The commands come from the CLI itself (click introspection of `zeroloop.cli.main.app`), so a
new command needs only its `epilog=examples(...)` and a README row for these tests to pass.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from zeroloop.cli import helptext
from zeroloop.cli.events import known_types
from zeroloop.cli.main import app
from zeroloop.errors import EventError
from zeroloop.events.catalogue import EVENT_TYPES
from zeroloop.profiles import PROFILES

README = Path(__file__).resolve().parents[2] / "README.md"
_ROOT = typer.main.get_command(app)


def _walk(command: object, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], object]]:
    found = [(path, command)]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        found.extend(_walk(sub, (*path, name)))
    return found


COMMANDS = _walk(_ROOT, ())
LEAVES = {path: command for path, command in COMMANDS if not hasattr(command, "commands")}


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "160"}, terminal_width=160)
    assert result.exit_code == 0, result.output
    return result.output


def _options(command: object) -> set[str]:
    return {opt for param in getattr(command, "params", []) for opt in getattr(param, "opts", []) if opt[:2] == "--"}


@pytest.mark.parametrize("path", [path for path, _command in COMMANDS], ids=lambda path: " ".join(path) or "root")
def test_every_command_help_has_an_example_and_no_raw_metavars(path: tuple[str, ...]) -> None:
    text = _help(path)
    assert helptext.EXAMPLES_HEADING in text, f"`zeroloop {' '.join(path)} --help` has no examples"
    example_lines = text.split(helptext.EXAMPLES_HEADING, 1)[1].splitlines()
    assert any(line.strip().startswith(" ".join(("zeroloop", *path))) for line in example_lines), text
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and "<bool>" not in text and "<str>" not in text, text


def _readme_spans() -> list[str]:
    spans = []
    for line in README.read_text().splitlines():
        cells = line.split(" | ")
        if line.startswith("| `zeroloop"):
            spans.extend(re.findall(r"`([^`]+)`", cells[0]))
    return spans


def _readme_commands() -> dict[tuple[str, ...], set[str]]:
    """Each command path the README's table names, with the options it names alongside."""
    named: dict[tuple[str, ...], set[str]] = {}
    for span in _readme_spans():
        words = span.replace("\\|", "|").split()
        if words[0] == "zeroloop":  # a second command in a row may leave it out: `tokens ls`
            words = words[1:]
        top = words[0]
        options = set(re.findall(r"--[a-z][a-z-]*", span))
        is_group = (top,) not in LEAVES  # after a group comes its subcommand(s); after a command, its arguments
        subs = words[1].split("|") if is_group and len(words) > 1 else []
        paths = [(top, sub) for sub in subs] if subs else [(top,)]
        for path in paths:
            named.setdefault(path, set()).update(options)
    return named


def test_readme_table_names_every_command_and_only_real_options() -> None:
    named = _readme_commands()
    missing = sorted(" ".join(path) for path in LEAVES if path not in named)
    assert not missing, f"README's command table lacks: {missing}"
    unknown = sorted(" ".join(path) for path in named if path not in LEAVES)
    assert not unknown, f"README's command table names commands the CLI lacks: {unknown}"
    for path, options in named.items():
        wrong = options - _options(LEAVES[path])
        assert not wrong, f"README gives `zeroloop {' '.join(path)}` options it lacks: {sorted(wrong)}"


def test_the_readme_check_catches_a_missing_row_and_a_misplaced_option(monkeypatch: pytest.MonkeyPatch) -> None:
    # The guard itself: a README without `events forget` and with `--dead` on `queue show` must fail.
    table = "| `zeroloop events tail\\|replay` | x |\n| `zeroloop queue ls\\|show [--dead]` | y |\n"
    monkeypatch.setattr("tests.cli.test_help._readme_spans", lambda: re.findall(r"`([^`]+)`", table))
    named = _readme_commands()
    assert ("events", "forget") not in named
    assert "--dead" in named[("queue", "show")] and "--dead" not in _options(LEAVES[("queue", "show")])


def test_examples_escape_brackets_so_rich_does_not_swallow_them() -> None:
    assert "\\[store]" in helptext.examples("zeroloop config | grep '[store]'")
    with pytest.raises(ValueError, match="at least one"):
        helptext.examples()


def test_run_help_lists_the_profiles_and_an_unknown_event_type_is_answered_with_every_type() -> None:
    run_help = _help(("run",))
    assert all(profile in run_help for profile in PROFILES), run_help
    # The event types are not in `events tail --help` (the catalogue loads only when a command runs);
    # the help says where they are, and an unknown type is refused with all of them.
    assert "refused with the list of types" in " ".join(_help(("events", "tail")).split())
    with pytest.raises(EventError) as refused:
        known_types(["NOT_AN_EVENT"])
    assert all(event_type in str(refused.value) for event_type in EVENT_TYPES)
