"""``--format`` as Docker takes it: ``json``, ``table``, ``table TEMPLATE`` or a Go-template-like TEMPLATE.

Scripts written for ``docker images --format '{{.Repository}}:{{.Tag}}'`` or ``docker inspect -f
'{{.Config.Env}}'`` should work unchanged, so this follows text/template where those scripts reach it: fields
(``.A.B``), the dot, string and number literals, pipelines (``.X | json``), ``if``/``else``/``range``/``with``
blocks, ``{{-``/``-}}`` trimming, Go's printing of values (``[a b]``, ``map[k:v]``, ``<nil>``) and the functions
Docker's CLI adds (json, join, split, upper, lower, title, truncate, pad, println, index, len, printf with
``%s``/``%d``/``%v``/``%q``, not, and, or, eq, ne, lt, le, gt, ge). Variables and ``define``/``template`` are
not supported: they are refused with a one-line usage error rather than printed wrong.

As in Docker's CLI, ``\\t`` and ``\\n`` typed in the format are a tab and a newline, and a ``table`` format
aligns its tab-separated cells as Go's tabwriter does there (minimum width 10, three spaces of padding) under a
header row made by running the same template over the column titles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.errors import usage

MISSING = object()  # a key a map does not have: Go prints "<no value>"


# --- parsing ----------------------------------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|(`[^`]*`)|(\|)|(\.[A-Za-z_][\w.]*|\.)|([A-Za-z_]\w*)|'
                    r'(-?\d+(?:\.\d+)?)|(\S+))')


@dataclass(frozen=True)
class _Arg:
    kind: str  # "field", "str", "num", "func"
    value: Any


@dataclass
class _Node:
    kind: str  # "text", "print", "if", "range", "with"
    text: str = ""
    pipeline: list[list[_Arg]] = field(default_factory=list)
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)


def _tokens(source: str, action: str) -> list[list[_Arg]]:
    """An action's pipeline: commands separated by ``|``, each a list of arguments."""
    commands: list[list[_Arg]] = [[]]
    for m in _TOKEN.finditer(action):
        dq, raw, pipe, fld, ident, num, other = m.groups()
        if other is not None:
            raise usage(f"invalid format {source!r}: unexpected {other!r} in {{{{{action}}}}}")
        if pipe:
            commands.append([])
        elif dq is not None:
            commands[-1].append(_Arg("str", json.loads(dq)))
        elif raw is not None:
            commands[-1].append(_Arg("str", raw[1:-1]))
        elif fld is not None:
            commands[-1].append(_Arg("field", [p for p in fld.split(".") if p]))
        elif ident is not None:
            if ident not in FUNCS and ident not in ("true", "false", "nil"):
                raise usage(f"invalid format {source!r}: function {ident!r} not defined")
            commands[-1].append(_Arg("func", ident))
        elif num is not None:
            commands[-1].append(_Arg("num", float(num) if "." in num else int(num)))
    if any(not c for c in commands):
        raise usage(f"invalid format {source!r}: empty command in {{{{{action}}}}}")
    return commands


def _parse(source: str) -> list[_Node]:
    pieces: list[tuple[str, str]] = []  # ("text", s) or ("action", s)
    pos = 0
    for m in _ACTION.finditer(source):
        text = source[pos:m.start()]
        if m.group(1):
            text = text.rstrip()
        if pieces and pieces[-1][0] == "trim":
            pieces.pop()
            text = text.lstrip()
        if text:
            pieces.append(("text", text))
        pieces.append(("action", m.group(2).strip()))
        if m.group(3):
            pieces.append(("trim", ""))
        pos = m.end()
    tail = source[pos:]
    if pieces and pieces[-1][0] == "trim":
        pieces.pop()
        tail = tail.lstrip()
    if "{{" in tail:
        raise usage(f"invalid format {source!r}: unclosed action")
    if tail:
        pieces.append(("text", tail))

    stack: list[_Node] = [_Node("root")]
    in_else: list[bool] = [False]
    for kind, text in pieces:
        target = stack[-1].orelse if in_else[-1] else stack[-1].body
        if kind == "text":
            target.append(_Node("text", text))
            continue
        word, _, rest = text.partition(" ")
        if text.startswith("/*"):
            continue
        if word in ("if", "range", "with"):
            node = _Node(word, pipeline=_tokens(source, rest))
            target.append(node)
            stack.append(node)
            in_else.append(False)
        elif word == "else":
            if len(stack) == 1 or in_else[-1]:
                raise usage(f"invalid format {source!r}: unexpected {{{{else}}}}")
            in_else[-1] = True
        elif word == "end":
            if len(stack) == 1:
                raise usage(f"invalid format {source!r}: unexpected {{{{end}}}}")
            stack.pop()
            in_else.pop()
        elif word in ("define", "template", "block", "break", "continue") or text.startswith("$"):
            raise usage(f"invalid format {source!r}: {{{{{text}}}}} is not supported here")
        else:
            target.append(_Node("print", pipeline=_tokens(source, text)))
    if len(stack) != 1:
        raise usage(f"invalid format {source!r}: unexpected EOF (an {{{{{stack[-1].kind}}}}} has no {{{{end}}}})")
    return stack[0].body


# --- values as Go prints them ------------------------------------------------------------------------------------

def go_string(value: Any) -> str:
    """``fmt.Sprint`` of a value decoded from JSON: what ``{{.X}}`` prints."""
    if value is MISSING:
        return "<no value>"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{go_string(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_string(v) for v in value) + "]"
    return str(value)


def _truth(value: Any) -> bool:
    return not (value is MISSING or value is None or value is False or value == 0 or
                (isinstance(value, (str, list, tuple, Mapping)) and len(value) == 0))


def _json(value: Any) -> str:
    """Docker's ``json``: compact, HTML characters as they are."""
    return json.dumps(None if value is MISSING else value, separators=(",", ":"), ensure_ascii=False)


def _join(items: Any, sep: str) -> str:
    return sep.join(go_string(i) for i in (items or []))


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, Mapping):
            value = value.get(key, MISSING)
        elif isinstance(value, (list, tuple)) and isinstance(key, int):
            if not 0 <= key < len(value):
                raise usage(f"format: index out of range: {key}")
            value = value[key]
        else:
            raise usage(f"format: cannot index {go_string(value)!r} with {key!r}")
    return value


def _printf(fmt: str, *args: Any) -> str:
    values = iter(args)

    def one(m: re.Match[str]) -> str:
        verb = m.group(1)
        if verb == "%":
            return "%"
        value = next(values, MISSING)
        if verb == "q":
            return json.dumps(go_string(value))
        return go_string(value)
    return re.sub(r"%([sdvq%])", one, fmt)


def _truncate(text: Any, length: int) -> str:
    s = go_string(text)
    return s[:length]


FUNCS: dict[str, Callable[..., Any]] = {
    "json": _json,
    "join": _join,
    "split": lambda s, sep: go_string(s).split(sep),
    "upper": lambda s: go_string(s).upper(),
    "lower": lambda s: go_string(s).lower(),
    "title": lambda s: go_string(s).title(),
    "truncate": _truncate,
    "pad": lambda s, left, right: " " * left + go_string(s) + " " * right,
    "println": lambda *a: " ".join(go_string(x) for x in a) + "\n",
    "print": lambda *a: "".join(go_string(x) for x in a),
    "printf": _printf,
    "index": _index,
    "len": lambda v: len(v) if isinstance(v, (str, list, tuple, Mapping)) else 0,
    "not": lambda v: not _truth(v),
    "and": lambda *a: next((v for v in a if not _truth(v)), a[-1]),
    "or": lambda *a: next((v for v in a if _truth(v)), a[-1]),
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}


# --- execution ---------------------------------------------------------------------------------------------------

class Template:
    """A parsed template. ``strict``: a field the data does not have is an error naming the fields it has (a
    listing's rows, like Docker's typed contexts); otherwise it prints ``<no value>`` (inspect, like Docker's
    fallback to the raw JSON)."""

    def __init__(self, source: str, strict: bool = False) -> None:
        self.source = source
        self.strict = strict
        self.nodes = _parse(source)

    def render(self, data: Any) -> str:
        out: list[str] = []
        self._run(self.nodes, data, out)
        return "".join(out)

    def _run(self, nodes: list[_Node], dot: Any, out: list[str]) -> None:
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
            elif node.kind == "print":
                value = self._pipeline(node.pipeline, dot)
                out.append(value if isinstance(value, str) else go_string(value))
            elif node.kind == "if":
                self._run(node.body if _truth(self._pipeline(node.pipeline, dot)) else node.orelse, dot, out)
            elif node.kind == "with":
                value = self._pipeline(node.pipeline, dot)
                if _truth(value):
                    self._run(node.body, value, out)
                else:
                    self._run(node.orelse, dot, out)
            elif node.kind == "range":
                value = self._pipeline(node.pipeline, dot)
                items = [value[k] for k in sorted(value)] if isinstance(value, Mapping) else \
                    list(value) if isinstance(value, (list, tuple)) else []
                if value not in (None, MISSING) and not isinstance(value, (Mapping, list, tuple)):
                    raise usage(f"format {self.source!r}: range can't iterate over {go_string(value)}")
                for item in items:
                    self._run(node.body, item, out)
                if not items:
                    self._run(node.orelse, dot, out)

    def _pipeline(self, commands: list[list[_Arg]], dot: Any) -> Any:
        value: Any = MISSING
        for i, command in enumerate(commands):
            extra = [] if i == 0 else [value]
            value = self._command(command, dot, extra)
        return value

    def _command(self, command: list[_Arg], dot: Any, extra: list[Any]) -> Any:
        head = command[0]
        if head.kind == "func" and head.value in FUNCS:
            args = [self._arg(a, dot) for a in command[1:]] + extra
            try:
                return FUNCS[head.value](*args)
            except (TypeError, IndexError):  # a wrong number of arguments, or values that do not compare
                raise usage(f"format {self.source!r}: wrong arguments for {head.value}") from None
        if len(command) > 1 or extra:
            raise usage(f"format {self.source!r}: can't give arguments to a non-function")
        return self._arg(head, dot)

    def _arg(self, arg: _Arg, dot: Any) -> Any:
        if arg.kind == "func":
            if arg.value in FUNCS:
                return FUNCS[arg.value]()
            return {"true": True, "false": False, "nil": None}[arg.value]
        if arg.kind != "field":
            return arg.value
        value = dot
        for name in arg.value:
            if isinstance(value, Mapping):
                if name in value:
                    value = value[name]
                elif self.strict:
                    raise usage(f"format {self.source!r}: no field {name!r} (fields: {', '.join(value)})")
                else:
                    value = MISSING
            elif value is MISSING or value is None:
                value = MISSING
            else:
                raise usage(f"format {self.source!r}: can't evaluate field {name} in {go_string(value)!r}")
        return value


def unescape(text: str) -> str:
    """Docker's CLI turns a typed ``\\t`` and ``\\n`` into a tab and a newline before parsing."""
    return text.replace("\\t", "\t").replace("\\n", "\n")


def render(source: str, data: Any, strict: bool = False) -> str:
    """One template over one value (``inspect -f``)."""
    return Template(unescape(source), strict).render(data)


def tabwrite(lines: Sequence[str], minwidth: int = 10, padding: int = 3) -> list[str]:
    """Go's tabwriter as Docker's tables use it: every tab-terminated cell padded to its column's width (the
    widest cell plus ``padding``, at least ``minwidth``); the last cell of a line is not padded."""
    cells = [line.split("\t") for line in lines]
    widths: dict[int, int] = {}
    for row in cells:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths.get(i, minwidth), len(cell) + padding)
    return ["".join(c.ljust(widths[i]) for i, c in enumerate(row[:-1])) + row[-1] for row in cells]


def listing(fmt: str | None, rows: Sequence[Mapping[str, Any]], default: str,
            headers: Mapping[str, str]) -> list[str]:
    """The lines a listing prints for ``--format FMT`` (``None`` or ``table``: the ``default`` table template).

    ``json`` prints each row as one JSON object per line (Docker's ``{{json .}}``); ``table TEMPLATE`` prints a
    header row (``headers`` maps a field to its column title) and aligned rows; any other template is run once per
    row, one line each. Rows are maps of field to value; a field they lack is an error."""
    fmt = (fmt or "table").strip()
    if fmt == "json":
        return [_json(dict(row)) for row in rows]
    table = fmt == "table" or fmt.startswith("table ")
    source = default if fmt == "table" else fmt[len("table "):].strip() if table else fmt
    template = Template(unescape(source), strict=True)
    lines = [template.render(row) for row in rows]
    if not table:
        return lines
    header_row = {k: headers.get(k, k.upper()) for k in (rows[0] if rows else headers)}
    header = Template(unescape(source), strict=False).render(header_row)
    out: list[str] = []
    for block in [header, *lines]:
        out.extend(block.split("\n"))
    return [line.rstrip() for line in tabwrite(out)]


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


def human_size(size: float, precision: int = 3) -> str:
    """go-units HumanSizeWithPrecision: decimal units, ``precision`` significant digits (Docker's listings use 3:
    "4.26MB", "999kB", "1e+03kB" just under a megabyte, as Go's %g prints it)."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return f"{size:.{precision}g}{units[i]}"
