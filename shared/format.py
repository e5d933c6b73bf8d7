"""How both tools print listings, as Docker's CLI prints them: a ``--format`` run over each row (``json``, ``table``,
``table TEMPLATE`` or a TEMPLATE, in the one template engine, :mod:`shared.template`), tables aligned by Go's
tabwriter as Docker configures it, and sizes and ages in go-units' words.

Sizes: go-units has two, and Docker uses each in its place. ``HumanSizeWithPrecision(size, 3)`` is what
``docker images`` and ``docker ps -s`` print in their SIZE columns ("4.26MB", "1e+03kB" just under a megabyte, as
Go's ``%.3g`` writes it); ``HumanSize`` (precision 4) is what ``docker system df``, ``image prune``'s "Total
reclaimed space" and the pull progress bars print ("4.257MB"). :func:`human_size` is both, by its ``precision``.
The puller once had a third, "%.1f" per unit (``4.3MB``), which matches neither: it is gone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.errors import StrataError

TABLE = "table"
JSON = "json"


def tabwrite(lines: Sequence[str], minwidth: int = 10, padding: int = 3) -> list[str]:
    """Go's text/tabwriter as Docker's tables use it (``tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)``, in ``docker
    ps``, ``images``, ``network ls``...): every tab-terminated cell is padded to its column's width, the widest
    cell plus ``padding`` and at least ``minwidth``; a line's last cell is not padded. As Go's, a column's width
    is set per block of consecutive lines that have a cell in it, so a line with fewer cells starts a new block."""
    cells = [line.split("\t") for line in lines]
    widths = [[0] * (len(row) - 1) for row in cells]
    _column_blocks(cells, widths, 0, 0, len(cells), minwidth, padding)
    return ["".join(c.ljust(w) for c, w in zip(row[:-1], ws, strict=True)) + row[-1]
            for row, ws in zip(cells, widths, strict=True)]


def _column_blocks(cells: list[list[str]], widths: list[list[int]], column: int, start: int, stop: int,
                   minwidth: int, padding: int) -> None:
    """tabwriter's format(): the blocks of lines ``start..stop`` that have a cell in ``column``, each given its
    width, then the columns right of it within the block."""
    line = start
    while line < stop:
        if column >= len(cells[line]) - 1:
            line += 1
            continue
        end, width = line, minwidth
        while end < stop and column < len(cells[end]) - 1:
            width = max(width, len(cells[end][column]) + padding)
            end += 1
        for i in range(line, end):
            widths[i][column] = width
        _column_blocks(cells, widths, column + 1, line, end, minwidth, padding)
        line = end


def listing(fmt: str | None, rows: Sequence[Mapping[str, Any]], default: str,
            headers: Mapping[str, str]) -> list[str]:
    """The lines a listing prints for ``--format FMT``, as Docker's formatter.Context: ``None`` or ``table`` is
    the ``default`` template as a table; ``json`` is ``{{json .}}``; a format that starts with ``table`` is a
    table of the rest: a header row (the template run over the column titles, ``headers`` mapping a field to its
    title, with Docker's header functions) and the rows, aligned by :func:`tabwrite`; any other is run once per
    row. Rows are maps of field to value standing for Docker's typed rows: a field they lack is an error."""
    from shared.template import HEADER_FUNCS, Template, unescape  # here: sizes and ages need no template engine

    text = (fmt or TABLE).strip(" ")
    table = text.startswith(TABLE)
    source = default if text == TABLE else "{{json .}}" if text == JSON else text.removeprefix(TABLE) if table \
        else text
    template = Template(unescape(source.strip(" ")), strict=True)
    lines = [template.render(row) for row in rows]
    if not table:
        return lines
    titles = {k: headers.get(k, k.upper()) for k in (rows[0] if rows else headers)}
    try:
        header = template.render(titles, HEADER_FUNCS)
    except StrataError:  # Docker ignores the header's error (a function the titles do not suit): no header
        header = ""
    text = "".join(f"{line}\n" for line in [header, *lines])
    return tabwrite(text.split("\n")[:-1])


# --- Docker's units (github.com/docker/go-units) --------------------------------------------------------------------

def human_duration(seconds: float) -> str:
    """go-units HumanDuration: what Docker puts before "ago" (CREATED) and after "Up" (STATUS). Hours are
    rounded, days and longer count whole rounded hours, as there."""
    secs = int(seconds)
    if secs < 1:
        return "Less than a second"
    if secs == 1:
        return "1 second"
    if secs < 60:
        return f"{secs} seconds"
    minutes = secs // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)  # Go's Duration.Round(time.Hour): halves away from zero
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds // 3600) // 24 // 365} years"


def human_size(size: float, precision: int = 4) -> str:
    """go-units HumanSizeWithPrecision: decimal units, ``precision`` significant digits as Go's ``%.*g`` writes
    them. The default is go-units' HumanSize (4: "4.257MB"); listings' SIZE columns pass 3 (see the module's
    doc)."""
    return _custom_size(size, precision, 1000, ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"))


def bytes_size(size: float) -> str:
    """go-units BytesSize: binary units, 4 significant digits (``docker stats``' MEM USAGE / LIMIT: "1.5MiB /
    7.5GiB")."""
    return _custom_size(size, 4, 1024, ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"))


def _custom_size(size: float, precision: int, base: int, units: tuple[str, ...]) -> str:
    """go-units CustomSize: divided by BASE while it is that or more, as Go's ``%.*g`` writes it."""
    i = 0
    while size >= base and i < len(units) - 1:
        size /= base
        i += 1
    return f"{size:.{precision}g}{units[i]}"
