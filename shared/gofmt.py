"""Go's ``fmt`` over the values our templates see (decoded JSON: str, int, float, bool, None, lists, maps), so that
``{{.X}}``, ``print``/``println`` and ``printf`` print what Docker's CLI prints for the same value.

A value's Go type is what Docker's typed contexts or ``encoding/json`` would give it: str is ``string``, int is
``int``, float is ``float64``, bool is ``bool``, None is a nil interface, a list is ``[]interface {}`` and a map
``map[string]interface {}``. ``printf`` follows Go's rules for a verb that does not fit its operand (``%!d(string=x)``),
a missing operand (``%!s(MISSING)``) and operands left over (``%!(EXTRA int=2)``), rather than failing, as Go does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any


class NoValue:
    """A map key that is not there: Go's invalid value, printed ``<no value>``."""

    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE = NoValue()


def go_type(value: Any) -> str:
    """The Go type name of a decoded value, as ``%T`` and fmt's error forms write it."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "map[string]interface {}"
    if isinstance(value, list | tuple):
        return "[]interface {}"
    return "<nil>"


def go_str(value: Any) -> str:
    """``fmt.Sprint`` of one value (``%v``): ``<nil>``, ``true``, ``[a b]``, ``map[k:v]`` (keys sorted), floats
    as ``%g`` at the shortest precision (``1e+06``)."""
    return _verb_v(value, "", None)


def sprint(*args: Any) -> str:
    """``fmt.Sprint``: a space between two operands only when neither is a string."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(go_str(arg))
    return "".join(out)


def sprintln(*args: Any) -> str:
    """``fmt.Sprintln``: operands separated by spaces, then a newline."""
    return " ".join(go_str(a) for a in args) + "\n"


# -- printf ------------------------------------------------------------------------------------------------------

_DIRECTIVE = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+|\*)?)?(.?)", re.S)


def sprintf(template: str, *args: Any) -> str:
    """``fmt.Sprintf`` for the verbs Docker users write: ``%s %q %v %d %x %X %o %b %c %U %e %f %g %t %T %%`` with
    flags ``-+# 0``, a width and a precision (``%-10s``, ``%5d``, ``%.3s``, ``%08.3f``, ``%*d``)."""
    operands = iter(args)
    used = 0
    out: list[str] = []
    pos = 0
    for m in _DIRECTIVE.finditer(template):
        out.append(template[pos:m.start()])
        pos = m.end()
        flags, width_text, prec_text, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        if not verb:
            out.append("%!(NOVERB)")
            continue
        width, prec, taken, bad = _star_args(width_text, prec_text, m.group(0), operands)
        used += taken
        if bad:
            out.append(bad)
            continue
        value = next(operands, _MISSING)
        if value is _MISSING:
            out.append(f"%!{verb}(MISSING)")
            continue
        used += 1
        out.append(format_one(value, verb, flags, width, prec))
    out.append(template[pos:])
    extra = list(operands)
    if extra:
        out.append("%!(EXTRA " + ", ".join(_typed(v) for v in extra) + ")")
    return "".join(out)


_MISSING = object()


def _star_args(width_text: str | None, prec_text: str | None, directive: str,
               operands: Iterator[Any]) -> tuple[int | None, int | None, int, str]:
    """Width and precision, each written or taken from an operand (``*``): (width, precision, operands taken,
    Go's error form if a ``*`` operand is not an int)."""
    taken = 0
    numbers: list[int | None] = []
    for text, what in ((width_text, "WIDTH"), (prec_text, "PREC")):
        if text == "*":
            value = next(operands, _MISSING)
            taken += 1
            if not isinstance(value, int) or isinstance(value, bool):
                return None, None, taken, f"%!(BAD{what})"
            numbers.append(value)
        elif text is None:
            numbers.append(0 if what == "PREC" and "." in directive else None)
        else:
            numbers.append(int(text))
    return numbers[0], numbers[1], taken, ""


def _typed(value: Any) -> str:
    return "<nil>" if value is None else f"{go_type(value)}={go_str(value)}"


def _bad(value: Any, verb: str) -> str:
    return f"%!{verb}({_typed(value)})"


def format_one(value: Any, verb: str, flags: str, width: int | None, prec: int | None) -> str:
    """One operand under one verb. Lists and maps apply the verb to each element, as Go does (the width too)."""
    if verb == "T":
        return _pad(go_type(value), flags, width)
    if value is NO_VALUE:
        return _pad("<no value>", flags, width)
    if isinstance(value, Mapping):
        items = (f"{format_one(k, verb, flags, width, prec)}:{format_one(value[k], verb, flags, width, prec)}"
                 for k in sorted(value))
        return "map[" + " ".join(items) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(format_one(v, verb, flags, width, prec) for v in value) + "]"
    if verb == "v":
        text = quote(value) if "#" in flags and isinstance(value, str) else _verb_v(value, flags, prec)
        return _pad(text, flags, width)
    if value is None:
        return f"%!{verb}(<nil>)"
    if isinstance(value, bool):
        return _pad("true" if value else "false", flags, width) if verb in "tv" else _bad(value, verb)
    if isinstance(value, int):
        return _integer(value, verb, flags, width, prec)
    if isinstance(value, float):
        return _float(value, verb, flags, width, prec)
    return _string(str(value), verb, flags, width, prec)


def _pad(text: str, flags: str, width: int | None, zeros: bool = True) -> str:
    if width is None or len(text) >= width:
        return text
    if "-" in flags:
        return text.ljust(width)
    if "0" in flags and zeros:
        sign = text[0] if text[:1] in ("+", "-", " ") and len(text) > 1 else ""
        return sign + text[len(sign):].rjust(width - len(sign), "0")
    return text.rjust(width)


def _string(text: str, verb: str, flags: str, width: int | None, prec: int | None) -> str:
    if prec is not None and verb in "svqxX":
        text = text[:prec]
    if verb in "sv":
        return _pad(text, flags, width)
    if verb == "q":
        return _pad(quote(text, ascii_only="+" in flags, backquote="#" in flags), flags, width)
    if verb in "xX":
        data = text.encode()
        sep = " " if " " in flags else ""
        prefix = ("0X" if verb == "X" else "0x") if "#" in flags else ""
        digits = [f"{b:02X}" if verb == "X" else f"{b:02x}" for b in data]
        body = sep.join(prefix + d for d in digits) if sep else prefix + "".join(digits) if digits else ""
        return _pad(body, flags, width)
    return _bad(text, verb)


def _integer(n: int, verb: str, flags: str, width: int | None, prec: int | None) -> str:
    if verb == "c":
        return _pad(chr(n) if 0 <= n < 0x110000 else "\ufffd", flags, width)
    if verb == "q":
        return _pad(quote(chr(n), "+" in flags, quote_char="'"), flags, width)
    if verb == "U":
        return _pad(f"U+{n:04X}", flags, width)
    bases = {"d": ("d", ""), "v": ("d", ""), "x": ("x", "0x"), "X": ("X", "0X"), "o": ("o", "0"), "O": ("o", "0o"),
             "b": ("b", "0b")}
    if verb not in bases:
        return _bad(n, verb)
    spec, prefix = bases[verb]
    digits = format(abs(n), spec)
    if prec is not None:
        digits = "" if prec == 0 and n == 0 else digits.rjust(prec, "0")
    if verb == "O" or ("#" in flags and verb in "xXob"):
        digits = prefix + digits
    sign = "-" if n < 0 else "+" if "+" in flags else " " if " " in flags else ""
    return _pad(sign + digits, flags, width, zeros=prec is None)


def _float(x: float, verb: str, flags: str, width: int | None, prec: int | None) -> str:
    if verb not in "eEfFgGv":
        return _bad(x, verb)
    if math.isinf(x) or math.isnan(x):
        text = "NaN" if math.isnan(x) else "+Inf" if x > 0 else "-Inf"
        return _pad(text, flags, width, zeros=False)
    if verb in "gGv":
        text = _shortest_g(x) if prec is None else _precise_g(x, prec)
        text = text.upper() if verb == "G" else text
    else:
        text = format(x, f".{6 if prec is None else prec}{verb}")
    if not text.startswith("-"):
        text = ("+" if "+" in flags else " " if " " in flags else "") + text
    return _pad(text, flags, width)


def _exponent(mantissa: str, exp: int) -> str:
    return f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def _shortest_g(x: float) -> str:
    """strconv.FormatFloat(x, 'g', -1, 64): the shortest digits that read back as x; %e form when the exponent is
    below -4 or at least 6 (Go's threshold at the shortest precision; Python's repr switches at 16)."""
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    if x == 0:
        return sign + "0"
    import decimal  # here: only a float printed at the shortest precision needs it

    digits_tuple = decimal.Decimal(repr(abs(x))).normalize().as_tuple()
    digits = "".join(str(d) for d in digits_tuple.digits)
    exp = len(digits) + int(digits_tuple.exponent) - 1
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return sign + _exponent(mantissa, exp)
    point = exp + 1
    if point <= 0:
        return sign + "0." + "0" * -point + digits
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return sign + digits[:point] + "." + digits[point:]


def _precise_g(x: float, prec: int) -> str:
    """``%.Ng``: Python's ``g`` agrees with Go's here, but for its exponent of at least two digits (Go's too)."""
    return format(x, f".{max(prec, 1)}g")


def _verb_v(value: Any, flags: str, prec: int | None) -> str:
    if value is NO_VALUE:
        return "<no value>"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _float(value, "v", flags, None, prec)
    if isinstance(value, int):
        return _integer(value, "d", flags, None, prec)
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{_verb_v(k, flags, prec)}:{_verb_v(value[k], flags, prec)}"
                                 for k in sorted(value)) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(_verb_v(v, flags, prec) for v in value) + "]"
    text = str(value)
    return text[:prec] if prec is not None else text


_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v", "\\": "\\\\"}


def quote(text: str, ascii_only: bool = False, backquote: bool = False, quote_char: str = '"') -> str:
    """strconv.Quote (``%q``): Go's escapes, printable characters as they are (``%+q``: ASCII only); ``%#q`` is
    a raw `string` when the text allows one."""
    if backquote and "`" not in text and all(c == "\t" or c.isprintable() for c in text):
        return f"`{text}`"
    out = [quote_char]
    for ch in text:
        if ch == quote_char:
            out.append("\\" + ch)
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable() and (ord(ch) < 0x80 or not ascii_only):
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append(quote_char)
    return "".join(out)
