"""Docker's cp rules (shared.layer.copyrules), without a container: which argument is the container's, what a
trailing ``/`` or ``/.`` asserts, and where each case of the docs' table lands."""

from __future__ import annotations

import pytest

from shared.errors import StrataError
from shared.layer.copyrules import (
    Endpoint,
    Plan,
    absolute,
    asserts_dir,
    parse_arg,
    plan,
    specifies_current_dir,
    split_args,
    split_dir_entry,
)


def test_arguments_split_as_dockers() -> None:
    assert parse_arg("c:/etc/hosts") == Endpoint("c", "/etc/hosts")
    assert parse_arg("c:rel") == Endpoint("c", "rel")
    assert parse_arg("./file:name") == Endpoint(None, "./file:name")  # a local path with ':' starts with . or /
    assert parse_arg("/abs:x") == Endpoint(None, "/abs:x")
    assert parse_arg("-") == Endpoint(None, "-")
    assert parse_arg("plain") == Endpoint(None, "plain")
    with pytest.raises(StrataError, match="at least one container"):
        split_args("a", "b")
    with pytest.raises(StrataError, match="between containers"):
        split_args("a:/x", "b:/y")
    with pytest.raises(StrataError, match="cannot be empty"):
        split_args("a:", "/tmp")


def test_trailing_slash_and_dot() -> None:
    assert asserts_dir("/a/") and asserts_dir("/a/.") and asserts_dir(".") and not asserts_dir("/a")
    assert specifies_current_dir("/a/.") and specifies_current_dir(".") and not specifies_current_dir("/a/")
    assert absolute("x/", "/home") == "/home/x/" and absolute("x/.", "/home") == "/home/x/."
    assert absolute("../../..", "/a") == "/" and absolute("a/../b", "/") == "/b" and absolute("//x") == "/x"
    assert split_dir_entry("/a/b") == ("/a", "b") and split_dir_entry("/a/b/.") == ("/a/b", ".")
    assert split_dir_entry("/a/b/") == ("/a", "b") and split_dir_entry("/") == ("/", "/")


@pytest.mark.parametrize(("src_dir", "src", "exists", "is_dir", "dest", "expected"), [
    (False, "/f", False, False, "/new", Plan(True, "new")),  # file -> missing: created as DEST
    (False, "/f", True, False, "/old", Plan(True, "old")),  # file -> file: overwritten
    (False, "/f", True, True, "/dir", Plan(False, "f")),  # file -> dir: into it, SRC's name
    (True, "/d", False, False, "/new", Plan(True, "new")),  # dir -> missing: created
    (True, "/d", False, False, "/new/", Plan(True, "new")),  # (a trailing / changes nothing for a dir)
    (True, "/d", True, True, "/dir", Plan(False, "d")),  # dir -> dir: into it
    (True, "/d/.", True, True, "/dir", Plan(False, None)),  # dir/. -> dir: its content
    (True, "/d/.", False, False, "/new", Plan(True, "new")),  # dir/. -> missing: the same as dir
])
def test_where_a_copy_lands(src_dir: bool, src: str, exists: bool, is_dir: bool, dest: str, expected: Plan) -> None:
    name = split_dir_entry(src)[1]
    assert plan(src_dir, src, name, exists, is_dir, dest) == expected


def test_dockers_error_conditions() -> None:
    with pytest.raises(StrataError, match=r"^no such directory$"):
        plan(False, "/f", "f", False, False, "/missing/")
    with pytest.raises(StrataError, match=r"^cannot copy directory$"):
        plan(True, "/d", "d", True, False, "/file")
