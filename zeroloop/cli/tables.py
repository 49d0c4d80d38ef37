"""Tables that fit the terminal: the columns that name a row stay whole, the least useful go first.

Rich shrinks every column of a table wider than the terminal, and cuts a config key to
`tic_…`. A `Column` here says whether it names the row (`key`: never cut, never dropped)
and when it may go (`drop`: 1 goes first); `fitted` drops columns in that order until the
table fits the console's width, lets the remaining ones wrap, and says in the caption
which columns a wider terminal would show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import JustifyMethod
from rich.table import Table
from rich.text import Text

PADDING = 3  # cells each column adds besides its content: one space each side and a rule


@dataclass(frozen=True)
class Column:
    """One column: its header, whether it names the row, and its place in the order of dropping (0: never)."""

    header: str
    key: bool = False
    drop: int = 0
    justify: JustifyMethod = "left"


def _cells(text: str) -> int:
    return max((Text.from_markup(line).cell_len for line in text.splitlines()), default=0)


def fitted(columns: Sequence[Column], rows: Sequence[Sequence[str]], *, width: int, title: str | None = None) -> Table:
    """A table of `rows` (rich markup) that fits `width` cells, dropping droppable columns in their order."""
    natural = [max([_cells(column.header), *(_cells(row[i]) for row in rows)]) for i, column in enumerate(columns)]
    shown = list(range(len(columns)))
    droppable = sorted(
        (i for i, column in enumerate(columns) if column.drop and not column.key), key=lambda i: -columns[i].drop
    )

    # A wrapping column needs about a few cells; a key column needs all of its natural width.
    def needed(indexes: list[int]) -> int:
        return 1 + sum((natural[i] if columns[i].key else min(natural[i], 12)) + PADDING for i in indexes)

    dropped: list[str] = []
    while droppable and needed(shown) > width:
        gone = droppable.pop()
        shown.remove(gone)
        dropped.append(columns[gone].header)
    caption = f"a wider terminal also shows: {', '.join(dropped)}" if dropped else None
    table = Table(title=title, header_style="bold", caption=caption, caption_style="dim")
    for i in shown:
        column = columns[i]
        if column.key:
            table.add_column(column.header, no_wrap=True, min_width=natural[i], justify=column.justify)
        else:
            table.add_column(column.header, overflow="fold", justify=column.justify)
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    return table
