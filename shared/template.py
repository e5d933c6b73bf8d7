"""Go's text/template with Docker's functions: the one engine behind every ``--format`` and ``inspect -f`` of
both tools, so that a template written for ``docker ps``, ``docker images`` or ``docker inspect`` works unchanged.

The language, as Go 1.19+ has it: text and ``{{ ... }}`` actions (``{{-``/``-}}`` trim the space beside them,
``{{/* */}}`` comments); the dot, fields and chains of them (``.A.B``, ``$x.A``, ``(index .L 0).A``); string
(``"..."``, raw), number, char (``'a'``), ``true``/``false``/``nil`` literals; pipelines (``.X | printf "%s"``);
function calls with arguments and parenthesised sub-pipelines; variables (``$``, ``$x := ...``, ``$x = ...``,
``range $i, $e := ...``); ``if``/``with``/``range`` with ``else`` and ``else if``, ``break`` and ``continue``.
Functions: Go's (``and or not len index slice print printf println eq ne lt le gt ge html urlquery``) and
Docker's (``json split join title lower upper pad truncate``). ``define``/``template``/``block`` are refused.

Values are decoded JSON (maps, lists, strings, numbers); they print as Go's fmt prints them (:mod:`shared.gofmt`).
A map key that is not there is Go's ``<no value>``; with ``strict`` (a listing's rows, which Docker's are typed
structs) it is Go's "can't evaluate field". Docker's string functions are lenient with numbers and bools (they
print them, where Go would refuse the type): templates that worked with our earlier engines keep working.

Errors are Go's, on one line, as Docker reports them: ``template parsing error: template: :1: function "x" not
defined`` for a template that does not parse, ``template: :1:2: executing "" at <.Nope>: ...`` for one that fails
on the data.
"""

from __future__ import annotations

import ast
import json
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.errors import usage
from shared.gofmt import NO_VALUE, go_str, go_type, quote, sprint, sprintf, sprintln

# -- lexing -------------------------------------------------------------------------------------------------------

_LEX = re.compile(r"""
  (?P<str>"(?:[^"\\\n]|\\.)*")
| (?P<raw>`[^`]*`)
| (?P<char>'(?:[^'\\\n]|\\.)+')
| (?P<decl>:=) | (?P<assign>=) | (?P<comma>,) | (?P<pipe>\|) | (?P<lparen>\() | (?P<rparen>\))
| (?P<field>(?:\.[^\W\d]\w*)+)
| (?P<num>[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?))
| (?P<dot>\.)
| (?P<var>\$\w*(?:\.[^\W\d]\w*)*)
| (?P<ident>[^\W\d]\w*)
""", re.X)
_SPACE = " \t\r\n"
KEYWORDS = ("if", "else", "end", "range", "with", "break", "continue", "define", "template", "block")


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    pos: int  # offset in the template


@dataclass
class _Item:
    """A piece of the template: text, or an action's tokens."""

    text: str | None
    tokens: list[_Token]
    pos: int


class _ParseError(Exception):
    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.pos = pos


def _lex(source: str) -> list[_Item]:
    """The template as text pieces and actions, ``{{-``/``-}}`` trimming applied and comments dropped."""
    items: list[_Item] = []
    pos = 0
    trim = False
    while (start := source.find("{{", pos)) >= 0:
        text = source[pos:start].lstrip(_SPACE) if trim else source[pos:start]
        inner = start + 2
        if source[inner:inner + 1] == "-" and source[inner + 1:inner + 2] in tuple(_SPACE):
            text = text.rstrip(_SPACE)
            inner += 2
        if text:
            items.append(_Item(text, [], pos))
        tokens, pos, trim = _lex_action(source, inner)
        if not (len(tokens) == 1 and tokens[0].kind == "comment"):
            items.append(_Item(None, tokens, start))
    text = source[pos:].lstrip(_SPACE) if trim else source[pos:]
    if text:
        items.append(_Item(text, [], pos))
    return items


def _lex_action(source: str, i: int) -> tuple[list[_Token], int, bool]:
    """An action's tokens from offset ``i``: (tokens, the offset past its ``}}``, whether it ends with ``-}}``)."""
    tokens: list[_Token] = []
    stripped = source[i:].lstrip(_SPACE)
    if stripped.startswith("/*"):
        begin = len(source) - len(stripped)
        end = source.find("*/", begin + 2)
        if end < 0:
            raise _ParseError("unclosed comment", begin)
        tokens.append(_Token("comment", "", begin))
        i = end + 2
    while i < len(source):
        if source.startswith("}}", i):
            return tokens, i + 2, False
        if source[i] in _SPACE:
            if source.startswith("-}}", i + 1):
                return tokens, i + 4, True
            i += 1
            continue
        if tokens and tokens[0].kind == "comment":
            raise _ParseError("comment ends before closing delimiter", i)
        m = _LEX.match(source, i)
        if m is None or m.lastgroup is None:
            raise _ParseError(_bad_character(source[i]), i)
        tokens.append(_Token(m.lastgroup, m.group(), i))
        i = m.end()
    raise _ParseError("unclosed action", i)


def _bad_character(ch: str) -> str:
    if ch == '"' or ch == "'":
        return "unterminated quoted string" if ch == '"' else "unterminated character constant"
    if ch == "`":
        return "unterminated raw quoted string"
    return f"unexpected bad character U+{ord(ch):04X} {ch!r} in command"


# -- parsing ------------------------------------------------------------------------------------------------------


@dataclass
class _Arg:
    """An operand: kind is lit, dot, field, var, func or pipe; ``names`` is a field chain after it."""

    kind: str
    value: Any
    pos: int  # where Go reports it: a chain of fields at its second
    text: str  # as written, for "executing ... at <...>"
    names: tuple[str, ...] = ()


@dataclass
class _Command:
    args: list[_Arg]
    text: str  # the command as written, for "executing ... at <...>"


@dataclass
class _Pipe:
    commands: list[_Command]
    decl: tuple[str, ...] = ()
    assign: bool = False  # ``$x = ...`` (an existing variable) rather than ``$x := ...``


@dataclass
class _Node:
    kind: str  # text, action, if, with, range, break, continue
    pos: int
    text: str = ""
    pipe: _Pipe | None = None
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)


class _Parser:
    def __init__(self, source: str, funcs: Mapping[str, Any]) -> None:
        self.source = source
        self.funcs = funcs
        self.items = _lex(source)
        self.at = 0
        self.scopes: list[list[str]] = [["$"]]
        self.loops = 0

    def parse(self) -> list[_Node]:
        nodes, stop = self.nodes()
        if stop is not None:
            raise _ParseError(f"unexpected {{{{{stop.tokens[0].text}}}}}", stop.pos)
        return nodes

    def nodes(self) -> tuple[list[_Node], _Item | None]:
        """Nodes up to an ``else`` or ``end`` (returned, for the block that owns it) or the end of the text."""
        out: list[_Node] = []
        while self.at < len(self.items):
            item = self.items[self.at]
            self.at += 1
            if item.text is not None:
                out.append(_Node("text", item.pos, item.text))
                continue
            if not item.tokens:
                raise _ParseError("missing value for command", item.pos)
            word = item.tokens[0].text if item.tokens[0].kind == "ident" else ""
            if word in ("else", "end"):
                return out, item
            out.append(self.action(word, item))
        return out, None

    def action(self, word: str, item: _Item) -> _Node:
        if word in ("if", "with", "range"):
            return self.block(word, item.tokens[1:], item.pos)
        if word in ("break", "continue"):
            if not self.loops:
                raise _ParseError(f"{{{{{word}}}}} outside {{{{range}}}}", item.pos)
            if len(item.tokens) > 1:
                raise _ParseError(f"unexpected {quote(item.tokens[1].text)} in {word}", item.pos)
            return _Node(word, item.pos)
        if word in ("define", "template", "block"):
            raise _ParseError(f"{{{{{word}}}}} is not supported here: write the template inline", item.pos)
        return _Node("action", item.pos, pipe=self.pipeline(item.tokens, "command", declare=True))

    def block(self, word: str, tokens: list[_Token], pos: int) -> _Node:
        self.scopes.append([])
        node = _Node(word, pos, pipe=self.pipeline(tokens, word, declare=True, in_range=word == "range"))
        self.loops += word == "range"
        node.body, stop = self.nodes()
        self.loops -= word == "range"
        if stop is None:
            raise _ParseError("unexpected EOF", len(self.source))
        rest = stop.tokens[1:]
        if stop.tokens[0].text == "else":
            if rest and rest[0].kind == "ident" and rest[0].text in ("if", "with"):
                node.orelse = [self.block(rest[0].text, rest[1:], stop.pos)]  # it takes the shared {{end}}
            elif rest:
                raise _ParseError(f"unexpected {quote(rest[0].text)} in else", stop.pos)
            else:
                node.orelse, stop = self.nodes()
                if stop is None:
                    raise _ParseError("unexpected EOF", len(self.source))
                if stop.tokens[0].text != "end":
                    raise _ParseError("expected end; found {{else}}", stop.pos)
        elif rest:
            raise _ParseError(f"unexpected {quote(rest[0].text)} in end", stop.pos)
        self.scopes.pop()
        return node

    def pipeline(self, tokens: list[_Token], context: str, declare: bool = False, in_range: bool = False) -> _Pipe:
        decl, assign, tokens = self.declarations(tokens, context, in_range) if declare else ((), False, tokens)
        if not tokens:
            raise _ParseError(f"missing value for {context}", self._pos(tokens))
        at = [0]
        pipe = self.sub_pipeline(tokens, at, context)
        if at[0] < len(tokens):
            raise _ParseError(f"unexpected {quote(tokens[at[0]].text)} in {context}", tokens[at[0]].pos)
        pipe.decl, pipe.assign = decl, assign
        if decl and not assign:
            self.scopes[-1].extend(decl)
        return pipe

    def declarations(self, tokens: list[_Token], context: str,
                     in_range: bool) -> tuple[tuple[str, ...], bool, list[_Token]]:
        kinds = [t.kind for t in tokens[:4]]
        names: tuple[str, ...]
        if kinds[:2] in (["var", "decl"], ["var", "assign"]):
            names, rest, assign = (tokens[0].text,), tokens[2:], kinds[1] == "assign"
        elif kinds[:4] == ["var", "comma", "var", "decl"] and in_range:
            names, rest, assign = (tokens[0].text, tokens[2].text), tokens[4:], False
        elif kinds[:2] == ["var", "comma"]:
            raise _ParseError(f"too many declarations in {context}", tokens[0].pos)
        else:
            return (), False, tokens
        if any("." in n for n in names):
            raise _ParseError(f"unexpected {quote(names[0])} in {context}", tokens[0].pos)
        if assign:
            self.variable(names[0], tokens[0].pos)
        return names, assign, rest

    def variable(self, name: str, pos: int) -> None:
        if not any(name in scope for scope in self.scopes):
            raise _ParseError(f"undefined variable {quote(name)}", pos)

    def sub_pipeline(self, tokens: list[_Token], at: list[int], context: str) -> _Pipe:
        """Commands separated by ``|``, up to the end of the tokens or a ``)`` (left for the caller)."""
        commands: list[_Command] = []
        while True:
            start = at[0]
            args = self.command(tokens, at)
            if not args:
                raise _ParseError(f"missing value for {context}", self._pos(tokens[start:]))
            end = tokens[at[0] - 1]
            text = self.source[tokens[start].pos:end.pos + len(end.text)]
            if commands and args[0].kind not in ("func", "field", "var", "pipe"):
                raise _ParseError(f"non executable command in pipeline stage {len(commands) + 1}", args[0].pos)
            commands.append(_Command(args, " ".join(text.split())))
            if at[0] < len(tokens) and tokens[at[0]].kind == "pipe":
                at[0] += 1
                continue
            return _Pipe(commands)

    def command(self, tokens: list[_Token], at: list[int]) -> list[_Arg]:
        args: list[_Arg] = []
        while at[0] < len(tokens) and tokens[at[0]].kind not in ("pipe", "rparen"):
            args.append(self.operand(tokens, at))
        return args

    def operand(self, tokens: list[_Token], at: list[int]) -> _Arg:
        token = tokens[at[0]]
        at[0] += 1
        arg = self.term(token, tokens, at)
        if at[0] < len(tokens) and tokens[at[0]].kind == "field" and arg.kind in ("pipe", "var"):
            chained = tokens[at[0]]
            previous = tokens[at[0] - 1]
            if chained.pos == previous.pos + len(previous.text):  # (...).Field: no space before the dot
                at[0] += 1
                arg.names += tuple(chained.text[1:].split("."))
                arg.text = self.source[token.pos:chained.pos + len(chained.text)]
                arg.pos = chained.pos  # Go's chain is where its first field is
        return arg

    def term(self, token: _Token, tokens: list[_Token], at: list[int]) -> _Arg:
        kind, text, pos = token.kind, token.text, token.pos
        if kind == "lparen":
            pipe = self.sub_pipeline(tokens, at, "parenthesized pipeline")
            if at[0] >= len(tokens) or tokens[at[0]].kind != "rparen":
                raise _ParseError("unclosed left paren", pos)
            at[0] += 1
            return _Arg("pipe", pipe, pos, self.source[pos:tokens[at[0] - 1].pos + 1])
        if kind == "field":  # Go reports a chain .A.B.C at its second field
            first = text.find(".", 1)
            return _Arg("field", None, pos + first if first > 0 else pos, text, tuple(text[1:].split(".")))
        if kind == "var":
            name, *names = text.split(".")
            self.variable(name, pos)
            return _Arg("var", name, pos + len(name) if names else pos, text, tuple(names))
        if kind == "dot":
            return _Arg("dot", None, pos, text)
        if kind == "ident":
            if text in ("true", "false", "nil"):
                return _Arg("lit", {"true": True, "false": False, "nil": None}[text], pos, text)
            if text not in self.funcs:
                raise _ParseError(f'function "{text}" not defined', pos)
            return _Arg("func", text, pos, text)
        if kind in ("str", "raw", "char", "num"):
            return _Arg("lit", _literal(kind, text, pos), pos, text)
        raise _ParseError(f"unexpected {quote(text)} in command", pos)

    def _pos(self, tokens: list[_Token]) -> int:
        return tokens[0].pos if tokens else len(self.source)


def _literal(kind: str, text: str, pos: int) -> Any:
    try:
        if kind == "raw":
            return text[1:-1]
        if kind == "str":
            return ast.literal_eval(text)
        if kind == "char":
            value = ast.literal_eval(text)
            if len(value) != 1:
                raise ValueError(text)
            return ord(value)
        digits = text.replace("_", "")
        if re.fullmatch(r"[+-]?0[xXbBoO].*", digits):
            return int(digits, 0)
        return float(digits) if any(c in digits for c in ".eE") else int(digits)  # Go's rule for a constant
    except (ValueError, SyntaxError):
        raise _ParseError(f"bad number syntax: {text!r}" if kind == "num" else f"bad literal {text}", pos) from None


# -- functions ----------------------------------------------------------------------------------------------------


class FuncError(Exception):
    """A function refused its arguments: Go's ``error calling NAME: ...``."""


class _TypeError(Exception):
    """An argument of the wrong type: Go's ``wrong type for value; expected ...; got ...``."""


def _text(value: Any) -> str:
    """A string argument: Go wants a string; numbers and bools are printed (see the module's doc)."""
    if isinstance(value, list | tuple | Mapping) or value is None:
        raise _TypeError(f"wrong type for value; expected string; got {go_type(value)}")
    return go_str(value)


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _TypeError(f"wrong type for value; expected int; got {go_type(value)}")
    return value


def _json(value: Any) -> str:
    """Docker's ``json``: encoding/json, compact, HTML characters as they are; a float that is whole is written
    as Go writes it (``3``, not ``3.0``)."""
    return json.dumps(_whole_floats(value), separators=(",", ":"), ensure_ascii=False)


def _whole_floats(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, Mapping):
        return {k: _whole_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_whole_floats(v) for v in value]
    return value


def _join(items: Any, sep: Any) -> str:
    if items is None:
        return ""
    if not isinstance(items, list | tuple):
        raise _TypeError(f"wrong type for value; expected []string; got {go_type(items)}")
    return _text(sep).join(go_str(i) for i in items)


def _split(text: Any, sep: Any) -> list[str]:
    text, sep = _text(text), _text(sep)
    return list(text) if sep == "" else text.split(sep)


def _title(text: Any) -> str:
    """Go's strings.Title: the first letter of each word upper-cased, the rest left as they are; a word is a run
    of letters, digits, underscores and marks (so ``foo_bar`` is one word, ``x-y`` two)."""
    out, previous = [], " "
    for ch in _text(text):
        word = previous.isalnum() or previous == "_"
        out.append(ch if word else ch.upper())
        previous = ch
    return "".join(out)


def _pad(text: Any, left: Any, right: Any) -> str:
    source = _text(text)
    return source if source == "" else " " * _int(left) + source + " " * _int(right)


def _truncate(text: Any, length: Any) -> str:
    source, n = _text(text), _int(length)
    if n < 0:
        raise FuncError("runtime error: slice bounds out of range")
    return source if len(source) < n else source[:n]


def _length(value: Any) -> int:
    if value is None:
        return 0  # Go refuses a nil; our earlier engines gave 0, which scripts may count on
    if isinstance(value, str | list | tuple | Mapping):
        return len(value)
    raise FuncError(f"len of type {go_type(value)}")


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if value is None or value is NO_VALUE:
            raise FuncError("index of untyped nil")
        if isinstance(value, Mapping):
            value = value.get(key, NO_VALUE) if isinstance(key, str) else _cannot_index(value, key)
        elif isinstance(value, str | list | tuple):
            if not isinstance(key, int) or isinstance(key, bool):
                _cannot_index(value, key)
            if not 0 <= key < len(value):
                raise FuncError(f"index out of range: {key}")
            value = value[key].encode()[0] if isinstance(value, str) else value[key]
        else:
            raise FuncError(f"can't index item of type {go_type(value)}")
    return value


def _cannot_index(value: Any, key: Any) -> Any:
    raise FuncError(f"cannot index {go_type(value)} with {go_type(key)}")


def _slice(value: Any, *bounds: Any) -> Any:
    if not isinstance(value, str | list | tuple):
        raise FuncError(f"can't slice item of type {go_type(value)}")
    if len(bounds) > (2 if isinstance(value, str) else 3):
        raise FuncError(f"too many slice indexes: {len(bounds)}")
    numbers = [_int(b) for b in bounds]
    low, high = (numbers + [0, len(value)][len(numbers):])[:2]
    if not 0 <= low <= high <= len(value):
        raise FuncError(f"slice index out of range: {numbers[-1]}")
    return value[low:high]


def _kind(value: Any) -> str:
    if value is None or value is NO_VALUE:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    return {int: "int", float: "float", str: "string"}.get(type(value), "other")


def _eq(first: Any, *others: Any) -> bool:
    """Go's eq: true if the first equals any other; values of different basic kinds are an error."""
    if not others:
        raise FuncError("missing argument for comparison")
    for other in others:
        kinds = {_kind(first), _kind(other)}
        if "nil" in kinds:
            if kinds == {"nil"}:
                return True
            continue
        if len(kinds) > 1:
            raise FuncError("incompatible types for comparison")
        if kinds == {"other"}:
            raise FuncError(f"non-comparable type {go_str(first)}: {go_type(first)}")
        if first == other:
            return True
    return False


def _ordered(a: Any, b: Any) -> None:
    kinds = {_kind(a), _kind(b)}
    if not kinds <= {"int", "float", "string"}:
        raise FuncError("invalid type for comparison")
    if len(kinds) > 1:
        raise FuncError("incompatible types for comparison")


def _less(a: Any, b: Any) -> bool:
    _ordered(a, b)
    return bool(a < b)


def _html(*args: Any) -> str:
    text = sprint(*args)
    for ch, entity in (("&", "&amp;"), ("'", "&#39;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&#34;"),
                       ("\0", "\ufffd")):
        text = text.replace(ch, entity)
    return text


def truth(value: Any) -> bool:
    """Go's truth for ``if``, ``with``, ``and``, ``or``, ``not``: the zero value, an empty string, list or map,
    nil and a missing key are false."""
    if value is None or value is NO_VALUE or value is False:
        return False
    if isinstance(value, str | list | tuple | Mapping):
        return len(value) > 0
    return not (isinstance(value, int | float) and value == 0)


Function = tuple[Callable[..., Any], int, int]  # the function, its fewest arguments, its most (-1: any number)

FUNCS: dict[str, Function] = {
    # Docker's (github.com/docker/cli/templates)
    "json": (_json, 1, 1), "split": (_split, 2, 2), "join": (_join, 2, 2), "title": (_title, 1, 1),
    "lower": (lambda s: _text(s).lower(), 1, 1), "upper": (lambda s: _text(s).upper(), 1, 1),
    "pad": (_pad, 3, 3), "truncate": (_truncate, 2, 2),
    # Go's text/template
    "and": (lambda *a: a[-1], 1, -1), "or": (lambda *a: a[-1], 1, -1), "not": (lambda v: not truth(v), 1, 1),
    "len": (_length, 1, 1), "index": (_index, 1, -1), "slice": (_slice, 1, -1),
    "print": (sprint, 0, -1), "println": (sprintln, 0, -1),
    "printf": (lambda f, *a: sprintf(_text(f), *a), 1, -1),
    "eq": (_eq, 1, -1), "ne": (lambda a, b: not _eq(a, b), 2, 2), "lt": (_less, 2, 2),
    "le": (lambda a, b: _less(a, b) or _eq(a, b), 2, 2), "gt": (lambda a, b: not (_less(a, b) or _eq(a, b)), 2, 2),
    "ge": (lambda a, b: not _less(a, b), 2, 2),
    "html": (_html, 0, -1), "urlquery": (lambda *a: urllib.parse.quote_plus(sprint(*a), safe="-_.~"), 0, -1),
}

# Docker's HeaderFunctions: a table's header runs the same template over the column titles, with these in place
# of Docker's own, so that a title comes out as it is (``{{upper .Names}}`` heads its column NAMES); Go's functions
# (printf...) are not replaced, so ``{{printf "%.3s" .Names}}`` heads its column NAM, as Docker's does.
HEADER_FUNCS: dict[str, Function] = {
    **FUNCS,
    **{name: (lambda v, *_: v, FUNCS[name][1], FUNCS[name][2])
       for name in ("json", "split", "join", "title", "lower", "upper", "truncate")},
}


# -- running ------------------------------------------------------------------------------------------------------

_NO_FINAL = object()  # the first command of a pipeline: no value piped into it


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _ExecError(Exception):
    def __init__(self, message: str, pos: int, what: str) -> None:
        super().__init__(message)
        self.pos = pos
        self.what = what


class _Exec:
    """One run of a template over one value: Go's state (the variables, the output)."""

    def __init__(self, root: Any, strict: bool, funcs: Mapping[str, Function]) -> None:
        self.vars: list[list[Any]] = [["$", root]]
        self.strict = strict
        self.funcs = funcs
        self.out: list[str] = []

    def walk(self, nodes: list[_Node], dot: Any) -> None:
        for node in nodes:
            if node.kind == "text":
                self.out.append(node.text)
            elif node.kind == "action":
                assert node.pipe is not None
                value = self.pipe(node.pipe, dot)
                if not node.pipe.decl:  # Go prints a nil it is handed (a JSON null) as a missing value
                    self.out.append("<no value>" if value is None else go_str(value))
            elif node.kind == "break":
                raise _Break
            elif node.kind == "continue":
                raise _Continue
            else:
                mark = len(self.vars)
                try:
                    self.range(node, dot) if node.kind == "range" else self.branch(node, dot)
                finally:
                    del self.vars[mark:]

    def branch(self, node: _Node, dot: Any) -> None:
        assert node.pipe is not None
        value = self.pipe(node.pipe, dot)
        if truth(value):
            self.walk(node.body, value if node.kind == "with" else dot)
        else:
            self.walk(node.orelse, dot)

    def range(self, node: _Node, dot: Any) -> None:
        assert node.pipe is not None
        value = self.pipe(node.pipe, dot, declare=False)
        if isinstance(value, Mapping):
            pairs = [(k, value[k]) for k in sorted(value)]  # Go ranges over a map in key order
        elif isinstance(value, list | tuple):
            pairs = list(enumerate(value))
        elif value is None or value is NO_VALUE:
            pairs = []
        else:
            first = node.pipe.commands[0]
            raise _ExecError(f"range can't iterate over {go_str(value)}", first.args[0].pos, first.args[0].text)
        if not pairs:
            self.walk(node.orelse, dot)
        for key, item in pairs:
            mark = len(self.vars)
            values = (key, item) if len(node.pipe.decl) == 2 else (item,)
            self.vars += [[name, v] for name, v in zip(node.pipe.decl, values, strict=False)]
            try:
                self.walk(node.body, item)
            except _Continue:
                continue
            except _Break:
                break
            finally:
                del self.vars[mark:]

    def pipe(self, pipe: _Pipe, dot: Any, declare: bool = True) -> Any:
        value: Any = _NO_FINAL
        for command in pipe.commands:
            value = self.command(command, dot, value)
        if declare and pipe.decl:
            if pipe.assign:
                next(v for v in reversed(self.vars) if v[0] == pipe.decl[0])[1] = value
            else:
                self.vars.append([pipe.decl[0], value])
        return value

    def command(self, command: _Command, dot: Any, final: Any) -> Any:
        first = command.args[0]
        if first.kind == "func":
            return self.call(command, dot, final)
        if len(command.args) > 1 or final is not _NO_FINAL:
            if first.names:
                raise _ExecError(f"{first.names[-1]} is not a method but has arguments", first.pos, first.text)
            raise _ExecError(f"can't give argument to non-function {first.text}", first.pos, first.text)
        if first.kind == "lit" and first.value is None:
            raise _ExecError("nil is not a command", first.pos, command.text)
        return self.arg(first, dot, command)

    def call(self, command: _Command, dot: Any, final: Any) -> Any:
        head = command.args[0]
        name = head.value
        function, fewest, most = self.funcs[name]
        count = len(command.args) - 1 + (final is not _NO_FINAL)
        if count < fewest or 0 <= most < count:
            want = f"at least {fewest}" if most < 0 else str(fewest)
            raise _ExecError(f"wrong number of args for {name}: want {want} got {count}", head.pos, name)
        if name in ("and", "or"):
            return self.logic(name, command, dot, final)
        values = [self.arg(a, dot, command) for a in command.args[1:]]
        if final is not _NO_FINAL:
            values.append(final)
        values = [None if v is NO_VALUE else v for v in values]  # Go passes a missing key as nil
        try:
            return function(*values)
        except FuncError as e:
            raise _ExecError(f"error calling {name}: {e}", head.pos, command.text) from None
        except _TypeError as e:
            raise _ExecError(str(e), head.pos, command.text) from None

    def logic(self, name: str, command: _Command, dot: Any, final: Any) -> Any:
        """``and``/``or`` as Go 1.18+: the arguments are evaluated in turn, stopping at the one that decides."""
        value: Any = None
        for arg in [*command.args[1:], final]:
            if arg is _NO_FINAL:
                break
            value = self.arg(arg, dot, command) if isinstance(arg, _Arg) else arg
            if truth(value) == (name == "or"):
                return value
        return value

    def arg(self, arg: _Arg, dot: Any, command: _Command) -> Any:
        if arg.kind == "lit":
            return arg.value
        if arg.kind == "func":
            return self.call(_Command([arg], arg.text), dot, _NO_FINAL)
        if arg.kind == "var":
            value = next(v for v in reversed(self.vars) if v[0] == arg.value)[1]
        elif arg.kind == "pipe":
            value = self.pipe(arg.value, dot, declare=False)
        else:
            value = dot
        return self.fields(value, arg, command)

    def fields(self, value: Any, arg: _Arg, command: _Command) -> Any:
        for name in arg.names:
            if isinstance(value, Mapping):
                if name in value:
                    value = value[name]
                elif self.strict:
                    raise _ExecError(f"can't evaluate field {name} (the fields are {', '.join(value)})", arg.pos,
                                     arg.text)
                else:
                    value = NO_VALUE
            elif value is None:
                raise _ExecError(f"nil pointer evaluating interface {{}}.{name}", arg.pos, arg.text)
            elif value is not NO_VALUE:  # Go names the type the value is held in (decoded JSON: an interface)
                raise _ExecError(f"can't evaluate field {name} in type interface {{}}", arg.pos, arg.text)
        return value


# -- the interface ------------------------------------------------------------------------------------------------


def _where(source: str, pos: int) -> tuple[int, int]:
    """Go's line (from 1) and byte in the line (from 0) of an offset, for its error messages."""
    line = source.count("\n", 0, pos) + 1
    return line, pos - (source.rfind("\n", 0, pos) + 1)


class Template:
    """A parsed template. ``strict``: a field the data's map lacks is an error (a listing's rows, which Docker's
    are typed structs) rather than ``<no value>`` (inspect's documents, which Docker falls back to as maps)."""

    def __init__(self, source: str, strict: bool = False) -> None:
        self.source = source
        self.strict = strict
        try:
            self.nodes = _Parser(source, FUNCS).parse()
        except _ParseError as e:
            line, _ = _where(source, e.pos)
            raise usage(f"template parsing error: template: :{line}: {e}") from None
        except RecursionError:
            raise usage("template parsing error: template: too deeply nested") from None

    def render(self, data: Any, funcs: Mapping[str, Function] = FUNCS) -> str:
        """The template over ``data``; ``funcs`` in place of Go's and Docker's functions (a table's header)."""
        run = _Exec(data, self.strict and funcs is FUNCS, funcs)
        try:
            run.walk(self.nodes, data)
        except _ExecError as e:
            line, byte = _where(self.source, e.pos)
            what = e.what.replace("\n", "\\n")
            raise usage(f'template: :{line}:{byte}: executing "" at <{what}>: {e}') from None
        except RecursionError:
            raise usage("template: too deeply nested to run") from None
        return "".join(run.out)


def unescape(text: str) -> str:
    """Docker's CLI turns a typed ``\\t`` and ``\\n`` into a tab and a newline before parsing a --format."""
    return text.replace("\\t", "\t").replace("\\n", "\n")


def render(source: str, data: Any, strict: bool = False) -> str:
    """One --format (escapes as Docker's CLI reads them) over one value."""
    return Template(unescape(source), strict).render(data)

