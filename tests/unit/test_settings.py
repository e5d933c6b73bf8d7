"""The settings loader (shared/settings.py): which file a process reads, for root and for everyone else, from an
environment the test passes in; what each key must be and the one line a wrong one gets; the puller's mirrors
and command-line additions. Pure logic: files only under tmp_path, no root, no network, no tools."""

from __future__ import annotations

import ipaddress
import json
import pwd
from pathlib import Path

import pytest

from shared.errors import Kind, StrataError
from shared.settings import SYSTEM_FILE, Mirror, Settings, locate, parse, read

NOBODY = 65534

# -- which file ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("euid", [0, 1000])
def test_strata_config_names_the_file_for_root_and_for_everyone_else(euid: int) -> None:
    env = {"STRATA_CONFIG": "/srv/strata.json", "XDG_CONFIG_HOME": "/x", "HOME": "/home/u"}
    assert locate(env, euid) == Path("/srv/strata.json")


@pytest.mark.parametrize("euid", [0, 1000])
def test_an_empty_strata_config_is_as_if_unset(euid: int) -> None:
    env = {"STRATA_CONFIG": "", "XDG_CONFIG_HOME": "/x", "HOME": "/home/u"}
    assert locate(env, euid) == (SYSTEM_FILE if euid == 0 else Path("/x/strata/config.json"))


def test_root_reads_the_system_file_whatever_its_xdg_says() -> None:
    assert locate({"XDG_CONFIG_HOME": "/root/.xdg", "HOME": "/root"}, 0) == Path("/etc/strata/config.json")


def test_a_user_reads_the_file_under_xdg_config_home() -> None:
    assert locate({"XDG_CONFIG_HOME": "/home/u/cfg", "HOME": "/home/u"}, 1000) == Path("/home/u/cfg/strata/config.json")


@pytest.mark.parametrize("env", [{"HOME": "/home/u"}, {"HOME": "/home/u", "XDG_CONFIG_HOME": ""}])
def test_without_xdg_config_home_a_user_reads_dot_config(env: dict[str, str]) -> None:
    assert locate(env, 1000) == Path("/home/u/.config/strata/config.json")


def test_without_home_the_users_home_comes_from_the_password_database() -> None:
    assert locate({}, NOBODY) == Path(pwd.getpwuid(NOBODY).pw_dir) / ".config" / "strata" / "config.json"


def test_a_user_never_reads_the_system_file() -> None:
    assert SYSTEM_FILE not in {locate({"HOME": "/home/u"}, uid) for uid in (1, 1000, NOBODY)}


# -- reading --------------------------------------------------------------------------------------------------------


def write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return path


def refused(path: Path) -> str:
    with pytest.raises(StrataError) as raised:
        read(path)
    assert raised.value.kind is Kind.USAGE
    assert "\n" not in str(raised.value)
    return str(raised.value)


def test_no_file_is_every_default(tmp_path: Path) -> None:
    assert read(tmp_path / "absent.json") == Settings()
    assert read(write(tmp_path, {})) == Settings()


def test_every_key_is_read_as_its_value(tmp_path: Path) -> None:
    got = read(write(tmp_path, {"insecure-registries": ["a:5000", "b"], "runtime": "crun", "network": "none",
                                "registry-mirrors": ["https://m.example", "a:5000=http://m:5001/"],
                                "bip": "10.200.0.1/24"}))
    assert got == Settings(insecure=frozenset({"a:5000", "b"}), runtime="crun", network="none",
                           mirrors=(Mirror("docker.io", "https://m.example"), Mirror("a:5000", "http://m:5001")),
                           bip=ipaddress.IPv4Interface("10.200.0.1/24"))
    assert got.bip is not None and (str(got.bip.network), str(got.bip.ip)) == ("10.200.0.0/24", "10.200.0.1")


def test_keys_it_does_not_know_are_ignored(tmp_path: Path) -> None:
    got = read(write(tmp_path, {"runtime": "runc", "log-driver": "local", "storage-driver": 7, "bridge": None}))
    assert got == Settings(runtime="runc")


@pytest.mark.parametrize("key", ["insecure-registries", "registry-mirrors", "runtime", "network", "bip"])
def test_null_is_the_default(tmp_path: Path, key: str) -> None:
    assert read(write(tmp_path, {key: None})) == Settings()


@pytest.mark.parametrize("key", ["runtime", "network", "bip"])
def test_an_empty_string_is_the_default(tmp_path: Path, key: str) -> None:
    assert read(write(tmp_path, {key: ""})) == Settings()


@pytest.mark.parametrize("doc", [[], "crun", 3])
def test_a_document_that_is_not_an_object_is_refused(tmp_path: Path, doc: object) -> None:
    path = write(tmp_path, doc)
    assert refused(path) == f"settings {path} is not a JSON object"


def test_a_file_that_is_not_json_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"runtime": "crun",}')
    assert refused(path).startswith(f"cannot read settings {path}: ")


def test_a_file_that_cannot_be_read_is_refused_naming_it(tmp_path: Path) -> None:
    assert refused(tmp_path).startswith(f"cannot read settings {tmp_path}: ")  # a directory


def test_parse_names_the_path_it_is_given() -> None:
    with pytest.raises(StrataError, match=r"^settings /given\.json: runtime must be a string$"):
        parse({"runtime": 1}, Path("/given.json"))


# -- each key's type ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["runtime", "network", "bip"])
@pytest.mark.parametrize("value", [1, True, ["crun"], {"name": "crun"}])
def test_a_string_key_of_another_type_is_refused(tmp_path: Path, key: str, value: object) -> None:
    path = write(tmp_path, {key: value})
    assert refused(path) == f"settings {path}: {key} must be a string"


@pytest.mark.parametrize("key", ["insecure-registries", "registry-mirrors"])
@pytest.mark.parametrize("value", ["myreg:5000", 5000, {"myreg": True}, ["myreg:5000", 5000], [None]])
def test_a_list_key_must_be_a_list_of_strings(tmp_path: Path, key: str, value: object) -> None:
    path = write(tmp_path, {key: value})
    assert refused(path) == f"settings {path}: {key} must be a list of strings"


def test_a_bad_mirror_in_the_file_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, {"registry-mirrors": ["https://m.example", "ftp://m"]})
    assert refused(path) == (f"settings {path}: registry-mirrors: invalid mirror 'ftp://m': expected "
                             "[REGISTRY=]http(s)://HOST[:PORT] (the root of a domain)")


@pytest.mark.parametrize("bip", ["nonsense", "10.200.0.1", "fd00::1/64", "10.200.0.1/33", "300.1.1.1/24"])
def test_a_bip_that_is_not_an_ipv4_address_with_prefix_is_refused(tmp_path: Path, bip: str) -> None:
    path = write(tmp_path, {"bip": bip})
    assert refused(path) == f"settings {path}: invalid bip {bip!r}: use an IPv4 ADDRESS/PREFIX, e.g. 10.200.0.1/24"


# -- mirrors and the command line -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "mirror"), [
    ("mirror.example", Mirror("docker.io", "https://mirror.example")),
    ("http://10.0.0.5:5001/", Mirror("docker.io", "http://10.0.0.5:5001")),
    ("myreg:5000=http://m:5001", Mirror("myreg:5000", "http://m:5001")),
])
def test_a_mirror_serves_docker_io_unless_it_names_a_registry(text: str, mirror: Mirror) -> None:
    assert Mirror.parse(text) == mirror


@pytest.mark.parametrize("text", ["ftp://m", "https://m/v2", "https://", "r="])
def test_a_mirror_that_is_not_the_root_of_a_domain_is_refused(text: str) -> None:
    with pytest.raises(StrataError, match=r"^invalid mirror .*: expected \[REGISTRY=\]http\(s\)://HOST"):
        Mirror.parse(text)


def test_mirrors_for_picks_a_domains_mirrors_in_order() -> None:
    s = Settings(mirrors=(Mirror("docker.io", "https://a"), Mirror("r:1", "http://b"), Mirror("docker.io", "https://c")))
    assert [m.url for m in s.mirrors_for("docker.io")] == ["https://a", "https://c"]
    assert s.mirrors_for("quay.io") == []


def test_command_line_options_add_to_the_files_lists(tmp_path: Path) -> None:
    got = read(write(tmp_path, {"insecure-registries": ["a"], "registry-mirrors": ["https://m"], "runtime": "crun"}))
    more = got.with_options(["b", "a"], ["r:1=http://n"])
    assert more.insecure == {"a", "b"} and more.runtime == "crun"
    assert more.mirrors == (Mirror("docker.io", "https://m"), Mirror("r:1", "http://n"))
    assert got.with_options() == got


def test_a_bad_mirror_on_the_command_line_is_refused() -> None:
    with pytest.raises(StrataError, match=r"^invalid mirror 'ftp://x'"):
        Settings().with_options(mirrors=["ftp://x"])


# -- the regression: a user's own file is honoured for every key ---------------------------------------------------


def test_a_non_root_users_file_is_honoured_for_every_key_bip_included(tmp_path: Path) -> None:
    """The network read only ``$STRATA_CONFIG`` or the system file, so a user's ``bip`` was dropped while
    ``network`` and ``runtime`` from the same file were honoured: one loader, one file, every key."""
    config_home = tmp_path / "cfg"
    (config_home / "strata").mkdir(parents=True)
    (config_home / "strata" / "config.json").write_text(json.dumps({
        "bip": "10.201.0.1/16", "network": "front", "runtime": "crun", "insecure-registries": ["r:5000"],
        "registry-mirrors": ["https://m.example"]}))
    got = read(locate({"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(config_home)}, 1000))
    assert got.bip == ipaddress.IPv4Interface("10.201.0.1/16")
    assert (got.network, got.runtime, got.insecure) == ("front", "crun", frozenset({"r:5000"}))
    assert got.mirrors == (Mirror("docker.io", "https://m.example"),)
