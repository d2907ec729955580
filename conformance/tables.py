"""The command line's tables: drawn by rich on a terminal, plain aligned columns elsewhere (a CI log,
a pipe, a file), so logs stay readable and stay what scripts and tests parse.

A :class:`Table` holds its columns and rows as text; :meth:`Table.show` picks the form by the stream
(or its ``terminal`` argument), :meth:`Table.lines` is the plain form, :meth:`Table.rich` the other.
Both forms lay the rows out alike, the rich one with a bold header over a rule and its columns at
least as wide as their longest cell. Besides ordinary rows, a table has

* groups (:meth:`Table.group`): the label on a line of its own above the group's rows (bold on a
  terminal);
* spans (``row(..., span=text)``): a long text after the row's first cells (an unavailable backend's
  reason, a measurement's error), wrapped at word boundaries (plain: within ``width``; rich: within
  the terminal's width), or cut there when ``overflow="truncate"``, or (plain) whole on one line when
  ``overflow="keep"``; a span with no cells is a detail line under the row above, indented by
  :data:`DETAIL_INDENT`.
"""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass, field
from typing import Literal, TextIO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.table import Table as RichTable
from rich.text import Text

DETAIL_INDENT = 4


@dataclass(frozen=True)
class Column:
    """``width``: the plain form's width (None: the widest cell or header); ``align``: ``<`` or ``>``;
    ``sep``: spaces before the column in the plain form; ``hang``: trailing characters of every cell
    (a mark such as ``~``, or a blank) that hang past the column's aligned edge, as the header does not."""

    header: str
    width: int | None = None
    align: Literal["<", ">"] = "<"
    sep: int = 1
    hang: int = 0


@dataclass
class _Row:
    cells: tuple[str, ...]
    span: str | None = None
    group: str | None = None      # set on a group's label, which has no cells


@dataclass
class Table:
    columns: list[Column]
    title: str | None = None
    indent: int = 0                 # plain: spaces before every row and the header (not the title or groups)
    width: int = 80                 # plain: where spans wrap (or every line is cut, with "truncate")
    overflow: Literal["wrap", "truncate", "keep"] = "wrap"   # "keep": plain spans whole on one line
    header: bool = True             # plain: whether the header line is printed (rich always shows it)
    rows: list[_Row] = field(default_factory=list)

    def group(self, label: str) -> None:
        self.rows.append(_Row((), group=label))

    def row(self, *cells: object, span: str | None = None) -> None:
        if len(cells) > len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        if span is None and len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns and no span")
        self.rows.append(_Row(tuple(str(c) for c in cells), span))

    # ------------------------------------------------------------------------------- plain

    def _widths(self) -> list[int]:
        out = []
        for i, c in enumerate(self.columns):
            if c.width is not None:
                out.append(c.width)
                continue
            cells = [len(r.cells[i]) - c.hang for r in self.rows if len(r.cells) > i and r.span is None]
            out.append(max([len(c.header) if self.header else 0, *cells]))
        return out

    def _cells(self, cells: tuple[str, ...], widths: list[int]) -> str:
        out = " " * self.indent
        for i, (c, text, w) in enumerate(zip(self.columns, cells, widths, strict=False)):
            out += (" " * c.sep if i else "") + (text.rjust(w + c.hang) if c.align == ">" else text.ljust(w + c.hang))
        return out

    def _span(self, prefix: str, text: str) -> list[str]:
        if self.overflow != "wrap":
            return [prefix + " ".join(text.split())]
        lines = textwrap.wrap(text, max(self.width - len(prefix), 20), subsequent_indent="  ",
                              break_long_words=False) or [""]
        return [(prefix if i == 0 else " " * len(prefix)) + line for i, line in enumerate(lines)]

    def lines(self) -> list[str]:
        """The plain form: the title, the header, the rows (groups and spans as the module says)."""
        widths = self._widths()
        out = [self.title] if self.title is not None else []
        if self.header:
            heads = tuple(c.header.rjust(w) + " " * c.hang if c.align == ">" else c.header
                          for c, w in zip(self.columns, widths, strict=True))
            out.append(self._cells(heads, widths))
        for r in self.rows:
            if r.group is not None:
                out.append(r.group)
            elif r.span is None:
                out.append(self._cells(r.cells, widths))
            elif r.cells:
                out += self._span(self._cells(r.cells, widths) + " ", r.span)
            else:
                out += self._span(" " * (self.indent + DETAIL_INDENT), r.span)
        out = [line.rstrip() for line in out]
        return [line[: self.width] for line in out] if self.overflow == "truncate" else out

    # ------------------------------------------------------------------------------- rich

    def _lead(self, i: int) -> int:
        """The blanks before column ``i`` in the rich form, past the one between any two columns."""
        return max(self.columns[i].sep, 1) - 1 if i else 0

    def _rich_widths(self) -> list[int]:
        """Each column's width in the rich form, its lead included: the plain form's, widened to its
        header and its longest cell."""
        out = []
        for i, (c, w) in enumerate(zip(self.columns, self._widths(), strict=True)):
            cells = [len(r.cells[i]) - c.hang for r in self.rows if len(r.cells) > i]
            out.append(self._lead(i) + max([w, len(c.header), *cells]) + c.hang)
        return out

    def _fixed(self, i: int, text: str, widths: list[int], header: bool = False) -> str:
        """A cell (or the header) at its column's rich width: right-aligned ones to the right edge (a
        header to the edge its cells' marks hang past), the others after the lead."""
        c = self.columns[i]
        if c.align == ">":
            return text.rjust(widths[i] - c.hang) + " " * c.hang if header else text.rjust(widths[i])
        return (" " * self._lead(i) + text).ljust(widths[i])

    def rich_width(self) -> int:
        """The width of the rich form's columns (spans and group labels wrap within whatever is wider)."""
        return self.indent + sum(self._rich_widths()) + len(self.columns) - 1

    def rich(self) -> Group:
        """The terminal form: the rows in rich tables whose columns have the same widths throughout, a
        bold header over a rule; a group's label bold on a line of its own; a span after its row's
        cells, wrapped at word boundaries to the terminal's width (cut there, with ``truncate``).
        Cells are plain text, never markup."""
        widths = self._rich_widths()
        parts: list[RenderableType] = [Text(self.title, style="bold")] if self.title is not None else []
        current: list[RichTable] = []

        def table() -> RichTable:
            if not current:
                t = RichTable(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=0, header_style="bold",
                              show_header=not any(isinstance(p, Padding) for p in parts))
                for i, c in enumerate(self.columns):
                    t.add_column(Text(self._fixed(i, c.header, widths, header=True)), width=widths[i], no_wrap=True)
                current.append(t)
                parts.append(Padding(t, (0, 0, 0, self.indent), expand=False))
            return current[0]

        table()    # the header first, as in the plain form
        for r in self.rows:
            if r.group is not None:
                current.clear()
                parts.append(Text(r.group, style="bold"))
            elif r.span is not None:
                current.clear()
                head = " " * (self.indent + DETAIL_INDENT)
                if r.cells:
                    head = " " * self.indent + " ".join(self._fixed(i, text, widths)
                                                        for i, text in enumerate(r.cells)) + " "
                cut = self.overflow == "truncate"
                grid = RichTable.grid(padding=0, expand=True)
                grid.add_column(width=len(head), no_wrap=True)
                grid.add_column(overflow="ellipsis" if cut else "fold", no_wrap=cut, ratio=1)
                grid.add_row(Text(head), Text(" ".join(r.span.split()) if cut else r.span))
                parts.append(grid)
            else:
                table().add_row(*(Text(self._fixed(i, text, widths)) for i, text in enumerate(r.cells)))
        return Group(*parts)

    # ------------------------------------------------------------------------------- either

    def show(self, stream: TextIO | None = None, terminal: bool | None = None) -> None:
        """Print the table on ``stream`` (default stdout): rich when ``terminal`` (default: whether the
        stream is a terminal), else the plain lines."""
        stream = stream or sys.stdout
        if terminal is None:
            terminal = is_terminal(stream)
        if terminal:   # never narrower than the columns: on a narrow terminal lines run on, numbers stay whole
            console = Console(file=stream, force_terminal=True, highlight=False)
            console.width = max(console.width, self.rich_width())
            console.print(self.rich(), crop=False)
        else:
            for line in self.lines():
                print(line, file=stream)
        stream.flush()


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):   # a closed or odd stream: plain
        return False
