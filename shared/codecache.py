"""The methods ``@dataclass`` writes, kept compiled between runs, as Python keeps a module's bytecode.

Each ``@dataclass`` writes its methods (``__init__``, ``__repr__``, ``__eq__``; for a frozen one ``__setattr__``,
``__delattr__`` and ``__hash__``) as source text and compiles it, every time the class is made, in every process:
``runner run``'s imports make ~60 dataclasses, ~350 compilations, which were a third of their work (callgrind: 544
-> 356 million instructions with this cache). Python caches a module's bytecode in ``__pycache__``, never this.

:func:`install` (called by a command's entry point, before its imports) has dataclasses compile through a table per
module of this project: code objects keyed by their exact source text, kept beside the module's bytecode
(``__pycache__/NAME.TAG.dataclasses``) and headed by the interpreter's bytecode magic number, so another
interpreter's file is never used. A code object is what ``exec`` of the same text compiles, so a hit changes
nothing but the time, and a text not in the table is compiled as always. The tables that gained an entry are
written at exit, as Python writes bytecode: not under ``PYTHONDONTWRITEBYTECODE``, nor where the directory is not
writable (the file is then only read); :func:`warm` writes them regardless (scripts/setup, the tests). A table
holds what the module used in the last process that wrote it, so an edited class leaves nothing behind. The file
is trusted as the ``.pyc`` beside it is, and lives where it does."""

from __future__ import annotations

import builtins
import contextlib
import marshal
import os
import sys
import types
from collections.abc import Mapping
from types import CodeType
from typing import Any

PACKAGES = ("runner.", "shared.", "puller.")
SUFFIX = ".dataclasses"

_loaded: dict[str, dict[str, CodeType]] = {}  # module -> text -> code, as its file had them
_used: dict[str, dict[str, CodeType]] = {}  # module -> what this process compiled or took
_files: dict[str, str] = {}  # module -> its cache file
_changed: set[str] = set()


def install() -> None:
    """Make dataclasses compile through the cache (idempotent). Its ``_create_fn`` calls ``exec`` by name, and a
    global of its module is found before the builtin; any other caller of ``exec`` is untouched. typing's
    ``ForwardRef`` (made for each string annotation of a ``NamedTuple``'s fields: 12 on the run path) compiles
    its text by name too, and goes through the same tables."""
    import atexit
    import typing

    if "dataclasses" not in sys.modules:
        _import_dataclasses()
    import dataclasses

    if getattr(dataclasses, "exec", None) is _exec:
        return
    dataclasses.exec = _exec  # type: ignore[attr-defined]
    typing.compile = _compile_reference  # type: ignore[attr-defined]
    atexit.register(save)


DEFERRED = ("inspect", "copy")  # what dataclasses imports at its top and uses in one rare path each


class _Deferred(types.ModuleType):
    """Stands in for a module in dataclasses' namespace only, until dataclasses first uses it: ``inspect``
    (``inspect.signature`` for a class without a docstring; with ast, dis and tokenize it is ~8 ms of every
    command's imports) and ``copy`` (``asdict``'s deep copy). The first attribute asked for imports the real
    module, puts it in dataclasses' place of this one, and answers from it: what dataclasses does is unchanged,
    only when the module is imported."""

    def __getattr__(self, attr: str) -> Any:
        import importlib

        module = importlib.import_module(self.__name__)
        setattr(sys.modules["dataclasses"], self.__name__, module)
        return getattr(module, attr)


def _import_dataclasses() -> None:
    """Import dataclasses with :data:`DEFERRED` standing in, for the import only, where they are not imported yet.
    What dataclasses imports besides them is imported first, so that no other module can take a stand-in."""
    import abc  # noqa: F401  (dataclasses' own imports, all but the deferred ones)
    import functools  # noqa: F401
    import itertools  # noqa: F401
    import keyword  # noqa: F401
    import re  # noqa: F401

    placed = {name: _Deferred(name) for name in DEFERRED if name not in sys.modules}
    sys.modules.update(placed)
    try:
        import dataclasses  # noqa: F401
    finally:
        for name, stand_in in placed.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]


def _exec(source: Any, globals: dict[str, Any] | None = None, locals: Mapping[str, object] | None = None) -> None:
    if isinstance(source, str) and globals is not None:
        module, path = globals.get("__name__"), globals.get("__file__")
        if isinstance(module, str) and module.startswith(PACKAGES) and isinstance(path, str):
            source = _code(module, path, source)
    if isinstance(source, str):
        # exec of a text inherits its caller's future flags, and this module's (annotations) would turn the
        # annotations of the methods dataclasses writes into strings: compiled as dataclasses' own exec does
        source = builtins.compile(source, "<string>", "exec", dont_inherit=True)
    builtins.exec(source, globals, locals)


EVAL = "\0eval\0"  # before the text of an "eval" entry: no source text holds a NUL (compile refuses it)


def _compile_reference(source: Any, filename: str, mode: str, *args: Any, **kwargs: Any) -> Any:
    """typing's ``compile``: ForwardRef's ``compile(text, '<string>', 'eval')``, for a module of ours whose code is
    the caller (a NamedTuple's class statement, ``get_type_hints``), from the module's table; anything else as the
    builtin would."""
    if isinstance(source, str) and (filename, mode) == ("<string>", "eval") and not args and not kwargs:
        frame = sys._getframe(1)
        for _ in range(8):  # typing's own frames, then the caller's
            if frame is None:
                break
            module, path = frame.f_globals.get("__name__"), frame.f_globals.get("__file__")
            if isinstance(module, str) and module.startswith(PACKAGES) and isinstance(path, str):
                return _code(module, path, source, "eval")
            frame = frame.f_back  # type: ignore[assignment]
    return builtins.compile(source, filename, mode, *args, **kwargs)


def _code(module: str, path: str, text: str, mode: str = "exec") -> CodeType:
    if module not in _files:
        _files[module] = cache_file(path)
        _loaded[module] = load(_files[module])
    key = text if mode == "exec" else EVAL + text
    code = _loaded[module].get(key)
    if code is None:
        # as dataclasses' exec (typing's compile) of the text compiles it: no future flag of this module's
        # (annotations) inherited; typing has none
        code = compile(text, "<string>", mode, dont_inherit=True)
        _changed.add(module)
    _used.setdefault(module, {})[key] = code
    return code


def cache_file(path: str) -> str:
    """Beside the module's bytecode (``sys.pycache_prefix`` honoured): ``__pycache__/NAME.cpython-311.dataclasses``."""
    from importlib.util import cache_from_source

    return os.path.splitext(cache_from_source(path))[0] + SUFFIX


def load(path: str) -> dict[str, CodeType]:
    """The table in ``path``; empty if there is none, it is another interpreter's, or it is not a table."""
    from importlib.util import MAGIC_NUMBER

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return {}
    if not data.startswith(MAGIC_NUMBER):
        return {}
    try:
        table = marshal.loads(data[len(MAGIC_NUMBER):])
    except (EOFError, ValueError, TypeError):
        return {}
    if not isinstance(table, dict) or not all(isinstance(k, str) and isinstance(v, CodeType)
                                              for k, v in table.items()):
        return {}
    return table


def save(force: bool = False) -> None:
    """Write the tables that gained an entry (each as this process used it), unless bytecode is not to be written
    (``force``: regardless). A table that cannot be written stays as it is."""
    if sys.dont_write_bytecode and not force:
        return
    from importlib.util import MAGIC_NUMBER

    for module in sorted(_changed):
        path = _files[module]
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(MAGIC_NUMBER + marshal.dumps(_used[module]))
            os.replace(tmp, path)  # readers see the old table or the whole new one
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            continue
        _changed.discard(module)


def warm(packages: tuple[str, ...] = ("shared", "runner", "puller")) -> None:
    """Import every module of ``packages`` through the cache and write their tables: what scripts/setup runs after
    an install (and the tests for the checkout), so that a first run, or every run under PYTHONDONTWRITEBYTECODE,
    finds them."""
    import importlib
    import pkgutil

    install()
    for name in packages:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            if not info.name.endswith(".__main__"):  # that one runs the tool
                importlib.import_module(info.name)
    save(force=True)
