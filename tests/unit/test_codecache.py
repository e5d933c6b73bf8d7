"""shared/codecache.py keeps the code ``@dataclass`` compiles between runs (issue 21). What a hit makes must be what
a compilation makes; a file that is another interpreter's, damaged, or stale must cost a compilation and nothing
else; nothing is written where Python would write no bytecode. Each test imports a throwaway package of its own,
and leaves dataclasses as it found it."""

from __future__ import annotations

import dataclasses
import importlib
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import codecache
from tests.unit import fresh_python

MODULE = '''
from __future__ import annotations
from dataclasses import dataclass, field
from typing import NamedTuple

@dataclass(frozen=True)
class Point:
    """A value."""
    x: int
    y: int = 0
    tags: tuple[str, ...] = field(default_factory=tuple)

@dataclass
class Box:
    points: list[Point]

class Pair(NamedTuple):
    """Its field annotations are strings (the future import): typing compiles each, as a ForwardRef."""
    a: int
    b: tuple[str, ...] = ()
'''


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A package ``cacheprobe`` on sys.path, counted as the project's; the cache's state and dataclasses restored
    afterwards."""
    package = tmp_path / "cacheprobe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "things.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(codecache, "PACKAGES", ("cacheprobe.",))
    for name in ("_loaded", "_used", "_files"):
        monkeypatch.setattr(codecache, name, {})
    monkeypatch.setattr(codecache, "_changed", set())
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    had = dataclasses.__dict__.get("exec")
    had_compile = typing.__dict__.get("compile")
    codecache.install()
    try:
        yield package
    finally:
        if had is None:
            dataclasses.__dict__.pop("exec", None)
        else:
            dataclasses.exec = had  # type: ignore[attr-defined]
        if had_compile is None:
            typing.__dict__.pop("compile", None)
        else:
            typing.compile = had_compile  # type: ignore[attr-defined]
        for name in [n for n in sys.modules if n.startswith("cacheprobe")]:
            del sys.modules[name]


def fresh_import() -> object:
    """The probe module made again, as a new process would make it (the cache's memory of this one dropped)."""
    for name in [n for n in sys.modules if n.startswith("cacheprobe")]:
        del sys.modules[name]
    codecache._loaded.clear()
    codecache._used.clear()
    codecache._files.clear()
    return importlib.import_module("cacheprobe.things")


def compilations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = compile

    def counting(text: str, *args: object, **kwargs: object) -> object:
        seen.append(text)
        return real(text, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(codecache, "compile", counting, raising=False)
    return seen


def check_values(things: object) -> None:
    point, box = things.Point, things.Box  # type: ignore[attr-defined]
    p = point(1, 2, ("a",))
    assert p == point(1, 2, ("a",)) and p != point(1) and hash(p) == hash(point(1, 2, ("a",)))
    assert repr(p) == "Point(x=1, y=2, tags=('a',))" and point(3).tags == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 5  # type: ignore[misc]
    assert box([p]) == box([p]) and dataclasses.replace(p, y=9).y == 9 and dataclasses.asdict(box([p])) == \
        {"points": [{"x": 1, "y": 2, "tags": ("a",)}]}
    pair = things.Pair  # type: ignore[attr-defined]
    assert pair(1) == (1, ()) and typing.get_type_hints(pair) == {"a": int, "b": tuple[str, ...]}
    for name, text in (("a", "int"), ("b", "tuple[str, ...]")):  # what typing's own compile makes
        ref = pair.__annotations__[name]
        made = compile(text, "<string>", "eval")
        assert ref.__forward_arg__ == text and ref.__forward_code__.co_code == made.co_code
        assert ref.__forward_code__.co_names == made.co_names and ref.__forward_code__.co_consts == made.co_consts


def test_a_second_process_compiles_nothing_and_makes_the_same_classes(probe: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    first = compilations(monkeypatch)
    check_values(fresh_import())
    assert first, "the dataclasses were not made through the cache"
    assert {k for k in codecache._used["cacheprobe.things"] if k.startswith(codecache.EVAL)} == \
        {codecache.EVAL + "int", codecache.EVAL + "tuple[str, ...]"}, "the NamedTuple's ForwardRefs missed the cache"
    codecache.save()
    files = list((probe / "__pycache__").glob("things.*.dataclasses"))
    assert len(files) == 1
    again = compilations(monkeypatch)
    check_values(fresh_import())
    assert again == []


@pytest.mark.parametrize("damage", [b"", b"not a table", b"\x00" * 40, "magic"])
def test_a_damaged_or_foreign_file_costs_a_compilation_and_nothing_else(probe: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        damage: bytes | str) -> None:
    fresh_import()
    codecache.save()
    [path] = (probe / "__pycache__").glob("things.*.dataclasses")
    data = path.read_bytes()
    path.write_bytes(b"\x00\x00" + data[2:] if damage == "magic" else damage)  # type: ignore[operator]
    seen = compilations(monkeypatch)
    check_values(fresh_import())
    assert seen


def test_an_edited_class_misses_and_leaves_no_stale_entry(probe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh_import()
    codecache.save()
    (probe / "things.py").write_text(MODULE.replace("y: int = 0", "y: int = 0\n    z: int = 7"))
    seen = compilations(monkeypatch)
    things = fresh_import()
    assert things.Point(1).z == 7 and any("z" in text for text in seen)  # type: ignore[attr-defined]
    codecache.save()
    [path] = (probe / "__pycache__").glob("things.*.dataclasses")
    inits = [text for text in codecache.load(str(path)) if "def __init__(self,x:" in text]
    assert len(inits) == 1 and "z:_type_z" in inits[0]


def test_nothing_is_written_where_bytecode_is_not(probe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    fresh_import()
    codecache.save()
    assert list(probe.rglob("*.dataclasses")) == []
    codecache.save(force=True)
    assert len(list(probe.rglob("*.dataclasses"))) == 1


def test_other_modules_and_other_execs_are_left_alone(probe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = compilations(monkeypatch)

    @dataclasses.dataclass
    class Local:  # this test module is not the project's
        a: int

    assert Local(1) == Local(1) and seen == [] and codecache._used == {}
    # as dataclasses' own exec makes them: the field's annotation (a string here, this module's future import),
    # never the names of the text's locals (a bug: the text inherited the cache module's future flags)
    assert Local.__init__.__annotations__ == {"a": "int", "return": None}
    namespace: dict[str, object] = {}
    exec("x = 1", namespace)
    assert namespace["x"] == 1


DEFERRED_PROBE = '''
import sys
from shared import codecache
from tests.unit import fresh_python
codecache.install()
import dataclasses
assert "inspect" not in sys.modules and "copy" not in sys.modules, "deferred modules imported with dataclasses"

@dataclasses.dataclass
class Bare:
    items: list
    n: int = 0

assert Bare.__doc__ == "Bare(items: list, n: int = 0)", Bare.__doc__  # inspect.signature, as without the stand-in
assert dataclasses.inspect is sys.modules["inspect"] and hasattr(sys.modules["inspect"], "getsource")
b = Bare([[1]])
d = dataclasses.asdict(b)
assert d == {"items": [[1]], "n": 0} and d["items"][0] is not b.items[0]  # copy.deepcopy, as without it
assert dataclasses.copy is sys.modules["copy"]
import copy, inspect  # the real modules for everyone else
assert copy.deepcopy is sys.modules["copy"].deepcopy and inspect.signature is sys.modules["inspect"].signature
print("ok")
'''


def test_inspect_and_copy_wait_for_dataclasses_first_use_and_then_are_the_real_modules() -> None:
    """dataclasses imports ``inspect`` (with ast, dis, tokenize) and ``copy`` at its top for two rare paths; the
    cache's install imports it with stand-ins that import the real module on first use: a class without a docstring
    still gets its signature as one, asdict still deep-copies, and no one else sees a stand-in."""
    import subprocess

    done = subprocess.run([fresh_python(), "-c", DEFERRED_PROBE], capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_modules_imported_before_install_are_not_replaced() -> None:
    import subprocess

    probe = ("import sys, inspect, copy\nfrom shared import codecache\ncodecache.install()\nimport dataclasses\n"
             "assert dataclasses.inspect is inspect and dataclasses.copy is copy\nprint('ok')")
    done = subprocess.run([fresh_python(), "-c", probe], capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
