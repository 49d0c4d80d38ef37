"""How `--help` reads: argument names in capitals, option values by kind, bare flags, and examples.

Typer builds each command's parameters; the classes here only change how they print:
`MODEL_ID` instead of `{model_id}` in the usage line, `--limit INTEGER` instead of
`<int range>`, and `--follow` instead of `--follow <bool>`. `apply(app)` gives every
command and group of a Typer app these classes, so a command added later needs nothing
but its `epilog=examples(...)`.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any, get_args, get_origin

import typer
from rich.markup import escape

# Typer vendors click; its command classes take these types, so overriding them needs them too.
from typer._click.core import Context, Parameter
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.models import CommandInfo, TyperInfo

EXAMPLES_HEADING = "Examples:"

_TYPE_WORDS: dict[type, str] = {int: "INTEGER", float: "NUMBER", str: "TEXT", bool: "BOOLEAN"}


def examples(*lines: str) -> str:
    """An epilog listing example command lines (each a complete `zeroloop ...` call)."""
    if not lines:
        raise ValueError("examples() needs at least one command line")
    body = "\n".join(f"  {escape(line)}" for line in lines)
    return f"{EXAMPLES_HEADING}\n{body}"


def _type_word(annotation: Any) -> str:
    if get_origin(annotation) is list:
        return _type_word(get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return "PATH"
    if isinstance(annotation, type):
        return _TYPE_WORDS.get(annotation, annotation.__name__.upper())
    return "VALUE"


class _Argument(TyperArgument):
    """A positional argument that shows as its capitalised name, without a type column."""

    def display_type_rich(self, ctx: Context) -> str | None:
        """No type column: the name says what to pass."""
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw + ("..." if self.nargs != 1 else "")
        return name if self.required else f"[{name}]"


class _Option(TyperOption):
    """An option whose value shows as TEXT, INTEGER, a|b|c; a flag shows no value at all."""

    def display_type_rich(self, ctx: Context) -> str | None:
        """The value's kind in capitals, the choices joined by `|`, or nothing for a flag."""
        if self.is_flag:
            return None
        if self.metavar is not None:
            return self.metavar
        descriptor = self.type_descriptor
        if descriptor.is_choice:
            return super().display_type(ctx).strip("<>").removeprefix("list[").removesuffix("]")
        return _type_word(descriptor.annotation)


def _tidy(params: list[Parameter]) -> list[Parameter]:
    for param in params:
        # Typer constructed these; only their display methods change, no state is added.
        if type(param) is TyperArgument:
            param.__class__ = _Argument
            if param.metavar is None and param.name:
                param.metavar = param.name.upper()
        elif type(param) is TyperOption:
            param.__class__ = _Option
    return params


class Command(TyperCommand):
    """A typer command whose parameters print the way this module describes."""

    def get_params(self, ctx: Context) -> list[Parameter]:
        """The parameters (the help option included), tidied for display."""
        return _tidy(super().get_params(ctx))


class Group(TyperGroup):
    """A typer group whose parameters print the way this module describes."""

    def get_params(self, ctx: Context) -> list[Parameter]:
        """The parameters (the help option included), tidied for display."""
        return _tidy(super().get_params(ctx))


def _set_command_classes(commands: list[CommandInfo]) -> None:
    for info in commands:
        if info.cls in (None, TyperCommand):
            info.cls = Command


def apply(app: typer.Typer) -> None:
    """Give every command and group of `app` (recursively) the display classes of this module."""
    if not isinstance(app.info.cls, type) or app.info.cls is TyperGroup:
        app.info.cls = Group
    _set_command_classes(app.registered_commands)
    for group in app.registered_groups:
        sub: TyperInfo = group
        if sub.typer_instance is not None:
            apply(sub.typer_instance)
