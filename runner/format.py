"""``--format``: the part of Go's text/template (with Docker's functions) that scripts written for ``docker ps
--format`` and ``docker inspect -f`` use, over plain Python values (dicts, lists, strings, numbers).

Supported: text and ``{{ ... }}`` actions (``{{-``/``-}}`` trim spaces as Go's); fields ``.`` and ``.A.B.C``;
string, number and bool literals; pipelines (``{{.Names | upper}}``); ``range``/``else``/``end``, ``if``/``else``/
``end``, ``with``/``else``/``end``; Docker's functions ``json``, ``join``, ``split``, ``upper``, ``lower``,
``title``, ``truncate``, ``pad``, ``println`` and Go's ``index``, ``len``, ``print``, ``not``, ``eq``, ``ne``.
A ``table`` prefix and ``\\t``/``\\n`` escapes are Docker's (:func:`prepare`). Values print as Go prints them
(``<nil>``, ``true``, ``[a b]``, ``map[k:v]``; a map key that is not there prints ``<no value>``).

What it does not do: variables (``$x :=``), parentheses, ``define``/``template``, method calls with arguments.
A template it cannot read is a one-line usage error, as Docker's "template parsing error".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.errors import usage

TABLE = "table"


class _NoValue:
    """A map key that is not there: Go prints ``<no value>`` for it."""

    def __str__(self) -> str:
        return "<no value>"


NO_VALUE = _NoValue()


@dataclass(frozen=True)
class Format:
    """A --format value, prepared: whether it is a ``table`` (a header and aligned columns), and the template."""

    table: bool
    template: Template


def prepare(text: str) -> Format:
    """Docker's preparation: ``json`` is ``{{json .}}``; a ``table`` prefix asks for a header and aligned
    columns; ``\\t`` and ``\\n`` written as two characters are a tab and a newline."""
    text = text.strip(" ")
    if text == "json":
        text = "{{json .}}"
    table = text.startswith(TABLE)
    if table:
        text = text[len(TABLE):].strip(" ")
    return Format(table, Template(text.replace("\\t", "\t").replace("\\n", "\n")))


# -- parsing ------------------------------------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|`[^`]*`|\||[^\s|]+)')


@dataclass
class _Node:
    kind: str  # text | action | range | if | with
    text: str = ""
    pipeline: list[list[str]] = field(default_factory=list)
    body: list[_Node] = field(default_factory=list)
    otherwise: list[_Node] = field(default_factory=list)


def _pipeline(expr: str) -> list[list[str]]:
    tokens = [m.group(1) for m in _TOKEN.finditer(expr)]
    commands: list[list[str]] = [[]]
    for token in tokens:
        if token == "|":
            commands.append([])
        else:
            commands[-1].append(token)
    if any(not c for c in commands):
        raise usage(f"template parsing error: missing command in {{{{{expr}}}}}")
    return commands


class Template:
    """A parsed template; :meth:`render` runs it over one value."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.nodes = self._parse(text)

    @staticmethod
    def _parse(text: str) -> list[_Node]:
        root: list[_Node] = []
        stack: list[tuple[_Node | None, list[_Node]]] = [(None, root)]
        pos = 0
        for m in _ACTION.finditer(text):
            before = text[pos:m.start()]
            if m.group(1):
                before = before.rstrip()
            if before:
                stack[-1][1].append(_Node("text", before))
            pos = m.end()
            if m.group(3):
                rest = text[pos:]
                pos += len(rest) - len(rest.lstrip())
            expr = m.group(2).strip()
            if expr.startswith("/*"):
                continue
            word, _, rest = expr.partition(" ")
            if word in ("range", "if", "with"):
                node = _Node(word, pipeline=_pipeline(rest))
                stack[-1][1].append(node)
                stack.append((node, node.body))
            elif word == "else":
                owner = stack[-1][0]
                if owner is None or stack[-1][1] is owner.otherwise:
                    raise usage("template parsing error: unexpected {{else}}")
                stack[-1] = (owner, owner.otherwise)
            elif word == "end":
                if len(stack) == 1:
                    raise usage("template parsing error: unexpected {{end}}")
                stack.pop()
            elif not expr:
                raise usage("template parsing error: missing value for command")
            else:
                stack[-1][1].append(_Node("action", pipeline=_pipeline(expr)))
        if len(stack) > 1:
            raise usage("template parsing error: unexpected EOF: a range, if or with has no {{end}}")
        if text[pos:]:
            root.append(_Node("text", text[pos:]))
        if any("{{" in t.text for t in _texts(root)):
            raise usage("template parsing error: unclosed action (a {{ without its }})")
        return root

    def render(self, value: Any, strict: bool = False) -> str:
        """The template over ``value``. ``strict``: a field that is not there is an error (Go's for a struct,
        what ``ps`` rows are to Docker) rather than ``<no value>`` (a map's, what ``inspect`` documents are)."""
        out: list[str] = []
        _Runner(strict).run(self.nodes, value, out)
        return "".join(out)

    def fields(self) -> list[str]:
        """The top-level fields the template's actions name, in order (for a table's header)."""
        names = []
        for node in self.nodes:
            if node.kind == "action":
                for command in node.pipeline:
                    names += [t[1:].split(".")[0] for t in command if t.startswith(".") and len(t) > 1]
        return names


def _texts(nodes: list[_Node]) -> list[_Node]:
    out = []
    for node in nodes:
        out += [node] if node.kind == "text" else _texts(node.body) + _texts(node.otherwise)
    return out


# -- running ------------------------------------------------------------------------------------------------------


def go_str(value: Any) -> str:
    """How Go's fmt prints a decoded JSON value."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{go_str(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_str(v) for v in value) + "]"
    return str(value)


def to_json(value: Any) -> str:
    """Docker's ``json``: compact, HTML characters not escaped."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                      default=lambda v: None if v is NO_VALUE else str(v))


def _truthy(value: Any) -> bool:
    return not (value is None or value is NO_VALUE or value is False or value == 0 or
                (isinstance(value, str | list | tuple | Mapping) and len(value) == 0))


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, Mapping):
            value = value.get(key, NO_VALUE)
        elif isinstance(value, list | tuple) and isinstance(key, int) and 0 <= key < len(value):
            value = value[key]
        else:
            raise usage(f"template: error calling index: cannot index {go_str(value)} with {key!r}")
    return value


def _join(items: Any, sep: str) -> str:
    return sep.join(go_str(i) for i in items or ())


def _truncate(text: Any, length: int) -> str:
    return go_str(text)[:length]


def _pad(text: Any, left: int, right: int) -> str:
    return " " * left + go_str(text) + " " * right


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "json": to_json,
    "join": _join,
    "split": lambda text, sep: go_str(text).split(sep),
    "upper": lambda text: go_str(text).upper(),
    "lower": lambda text: go_str(text).lower(),
    "title": lambda text: go_str(text).title(),
    "truncate": _truncate,
    "pad": _pad,
    "println": lambda *args: " ".join(go_str(a) for a in args) + "\n",
    "print": lambda *args: "".join(go_str(a) for a in args),
    "index": _index,
    "len": lambda value: len(value) if value is not None and value is not NO_VALUE else 0,
    "not": lambda value: not _truthy(value),
    "eq": lambda a, *others: any(a == b for b in others),
    "ne": lambda a, b: a != b,
}


class _Runner:
    def __init__(self, strict: bool) -> None:
        self.strict = strict

    def run(self, nodes: Sequence[_Node], dot: Any, out: list[str]) -> None:
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
            elif node.kind == "action":
                out.append(go_str(self.pipeline(node.pipeline, dot)))
            elif node.kind == "range":
                items = self.pipeline(node.pipeline, dot)
                if isinstance(items, Mapping):
                    items = [items[k] for k in sorted(items)]  # Go ranges over a map in key order
                if _truthy(items):
                    for item in items:
                        self.run(node.body, item, out)
                else:
                    self.run(node.otherwise, dot, out)
            else:  # if, with
                value = self.pipeline(node.pipeline, dot)
                if _truthy(value):
                    self.run(node.body, value if node.kind == "with" else dot, out)
                else:
                    self.run(node.otherwise, dot, out)

    def pipeline(self, commands: list[list[str]], dot: Any) -> Any:
        value: Any = NO_VALUE
        for i, command in enumerate(commands):
            extra = [] if i == 0 else [value]
            value = self.command(command, dot, extra)
        return value

    def command(self, command: list[str], dot: Any, extra: list[Any]) -> Any:
        head, args = command[0], command[1:]
        if head in FUNCTIONS:
            values = [self.operand(a, dot) for a in args] + extra
            try:
                return FUNCTIONS[head](*values)
            except TypeError:
                raise usage(f"template: wrong arguments for {head}: {' '.join(command)}") from None
        if args or extra:
            if head.startswith(".") or head[0] in '"`' or head[0].isdigit():
                raise usage(f"template: can't give arguments to {head} (not a function)")
            raise usage(f'template parsing error: function "{head}" not defined')
        return self.operand(head, dot)

    def operand(self, token: str, dot: Any) -> Any:
        if token == ".":
            return dot
        if token.startswith("."):
            value = dot
            for name in token[1:].split("."):
                value = self.field(value, name, token)
            return value
        if token.startswith('"'):
            return json.loads(token)
        if token.startswith("`"):
            return token[1:-1]
        if token in ("true", "false"):
            return token == "true"
        if token == "nil":
            return None
        if re.fullmatch(r"-?\d+", token):
            return int(token)
        if token in FUNCTIONS:
            return self.command([token], dot, [])
        raise usage(f'template parsing error: function "{token}" not defined')

    def field(self, value: Any, name: str, token: str) -> Any:
        if isinstance(value, Mapping):
            if name in value:
                return value[name]
            if self.strict:
                raise usage(f"template: can't evaluate field {name} ({token})")
            return NO_VALUE
        if value is None or value is NO_VALUE:
            if self.strict:
                raise usage(f"template: nil pointer evaluating {token}")
            return NO_VALUE
        raise usage(f"template: can't evaluate field {name} in {go_str(value)} ({token})")
