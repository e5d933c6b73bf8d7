"""The run options of ``create``, ``run`` and ``bundle``: each value type's parse and its refusals, in the one-line
words the user sees (exit 125 at the command line), and :func:`runner.container.options.resolve` building a spec
from an image config and the options. Pure: no root, no kernel, nothing written outside tmp_path."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Mapping
from pathlib import Path

import pytest

from runner import linux
from runner.container.options import RunOptions, command_line, merge_env, read_env_file, resolve
from runner.isolation import cgroups, security
from runner.logs.writer import LogConfig
from runner.net.model import AttachOptions, EndpointOptions, NetworkConfig, NetworkMode, PortSpec, parse_add_host
from runner.spec import A_NETWORK, DEFAULT_PATH, INIT_PATH, NAMESPACES, Rlimit, Spec, Tmpfs, Volume
from shared import userns
from shared.digest import Digest
from shared.errors import Kind, StrataError
from shared.image import OCI_CONFIG, OCI_MANIFEST, Descriptor
from shared.store.images import StoredImage
from shared.store.images import stored_image as make_stored_image
from shared.store.layout import Store


@pytest.fixture(autouse=True)
def _as_roots_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """resolve() as root's runner resolves (these run as nobody): what a user may not ask for without root is
    tests/test_rootless.py's."""
    monkeypatch.setattr(userns, "host_uid", lambda: 0)


def refused(call: object, *args: object, **kwargs: object) -> str:
    """The usage error ``call`` raises: its one line."""
    assert callable(call)
    with pytest.raises(StrataError) as caught:
        call(*args, **kwargs)
    assert caught.value.kind == Kind.USAGE, caught.value
    text = str(caught.value)
    assert "\n" not in text
    return text


# -- -v / --volume ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("/srv:/data", Volume("/srv", "/data", False)), ("/srv:/data:ro", Volume("/srv", "/data", True)),
    ("/srv:/data:rw", Volume("/srv", "/data", False)), ("/a:b:/c/d", None)])
def test_volume_forms(text: str, expected: Volume | None) -> None:
    if expected is None:  # three parts, the middle one not absolute: the destination is what is wrong
        assert refused(Volume.parse, text) == \
            f"invalid volume {text!r}: expected /HOST/PATH:/CONTAINER/PATH[:ro]"
        return
    assert Volume.parse(text) == expected


@pytest.mark.parametrize("text", ["/srv", "/srv:", ":/data", "/srv:/data:rx", "/srv:/data:ro:z"])
def test_volume_of_the_wrong_shape_is_refused(text: str) -> None:
    assert refused(Volume.parse, text) == f"invalid volume {text!r}: expected /HOST/PATH:/CONTAINER/PATH[:ro]"


def test_named_volumes_are_refused() -> None:
    assert refused(Volume.parse, "data:/data") == \
        "invalid volume 'data:/data': named volumes are not supported; give an absolute host path"


@pytest.mark.parametrize("text", ["/srv:data", "/srv:/"])
def test_volume_destination_must_be_absolute_and_not_the_root(text: str) -> None:
    assert refused(Volume.parse, text) == \
        f"invalid volume {text!r}: the destination must be an absolute path other than /"


def test_volume_mount_is_nodev_nosuid_unless_privileged() -> None:
    volume = Volume.parse("/srv:/data:ro")
    assert volume.mount(False).options == ("rbind", "ro", "rro", "nodev", "rnodev", "nosuid", "rnosuid")
    assert volume.mount(True).options == ("rbind", "ro", "rro")


# -- --tmpfs ----------------------------------------------------------------------------------------------------

def test_tmpfs_takes_dockers_default_flags() -> None:
    tmpfs = Tmpfs.parse("/scratch")
    assert tmpfs == Tmpfs("/scratch", linux.MS_NOEXEC | linux.MS_NOSUID | linux.MS_NODEV, "")
    assert tmpfs.mount().options == ("rw", "noexec", "nosuid", "nodev")


def test_tmpfs_options_turn_flags_off_and_pass_sizes() -> None:
    tmpfs = Tmpfs.parse("/scratch:exec,ro,size=1m,mode=1777")
    assert tmpfs.flags == linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV
    assert tmpfs.data == "size=1m,mode=1777"
    assert Tmpfs.from_options("/scratch", tmpfs.mount().options, "mount") == tmpfs  # what config.json reads back


@pytest.mark.parametrize("text", ["scratch", "/", ""])
def test_tmpfs_destination_must_be_absolute_and_not_the_root(text: str) -> None:
    assert refused(Tmpfs.parse, text) == \
        f"invalid --tmpfs {text!r}: the destination must be an absolute path other than /"


@pytest.mark.parametrize("option", ["bogus", "size", "uid"])
def test_tmpfs_unknown_option_is_refused(option: str) -> None:
    assert refused(Tmpfs.parse, f"/scratch:{option}") == f"invalid --tmpfs option {option!r}"


# -- --ulimit ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("nofile=1024:2048", Rlimit("RLIMIT_NOFILE", 1024, 2048)), ("nproc=50", Rlimit("RLIMIT_NPROC", 50, 50)),
    ("core=-1", Rlimit("RLIMIT_CORE", (1 << 64) - 1, (1 << 64) - 1)),
    ("stack=1:-1", Rlimit("RLIMIT_STACK", 1, (1 << 64) - 1))])
def test_ulimit_as_docker_reads_it(text: str, expected: Rlimit) -> None:
    assert Rlimit.parse(text) == expected


@pytest.mark.parametrize(("text", "words"), [
    ("nofile=2048:1024", "ulimit soft limit must be less than or equal to hard limit: 2048 > 1024"),
    ("nofile=-1:1024", "ulimit soft limit must be less than or equal to hard limit: -1 > 1024"),
    ("files=1", "invalid ulimit type: files"), ("nofile", "use NAME=SOFT[:HARD], e.g. nofile=1024:2048"),
    ("nofile=", "use NAME=SOFT[:HARD], e.g. nofile=1024:2048"),
    ("nofile=many", "the limits must be numbers"),
    ("nofile=-2", "a limit is a number of 0 or more, or -1 (unlimited)")])
def test_ulimit_docker_refuses(text: str, words: str) -> None:
    assert refused(Rlimit.parse, text) == f"invalid --ulimit {text!r}: {words}"


# -- --memory, --memory-swap, --memory-reservation, --cpus, --cpu-shares, --pids-limit -------------------------

@pytest.mark.parametrize(("cpus", "expected"), [(0.01, 0.01), (1.5, 1.5), (2, 2), (0, None), (None, None)])
def test_cpus_in_range_are_taken(cpus: float | None, expected: float | None) -> None:
    assert cgroups.check_cpus(cpus, 2) == expected


@pytest.mark.parametrize("cpus", [99, 2.01, 0.005, -1, float("nan"), float("inf")])
def test_cpus_out_of_range_are_refused_in_dockers_words(cpus: float) -> None:
    assert refused(cgroups.check_cpus, cpus, 2) == \
        f"invalid --cpus {cpus:g}: range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"


@pytest.mark.parametrize(("text", "expected"), [("6m", 6 << 20), ("512M", 512 << 20), ("1g", 1 << 30),
                                                ("1GiB", 1 << 30), ("8192 kb", 8 << 20),
                                                ("1.5g", 3 << 29), ("1t", 1 << 40), ("0", None)])
def test_memory_sizes_as_docker_reads_them(text: str, expected: int | None) -> None:
    assert cgroups.Limits.parse_memory(text) == expected


@pytest.mark.parametrize("text", ["1k", "6291455b"])
def test_memory_below_the_minimum_is_refused(text: str) -> None:
    assert refused(cgroups.Limits.parse_memory, text) == f"invalid --memory {text!r}: minimum memory limit " \
                                                         "allowed is 6MB"


@pytest.mark.parametrize("text", ["lots", "-1m", "1x"])
def test_malformed_memory_is_refused(text: str) -> None:
    assert refused(cgroups.Limits.parse_memory, text) == \
        f"invalid --memory {text!r}: invalid size: use a number with an optional unit b, k, m, g, t or p"


def test_pids_limit_zero_or_negative_is_no_limit() -> None:
    """Docker: ``--pids-limit`` 0 or -1 means unlimited; a positive one is the limit."""
    assert cgroups.Limits.from_options(None, None, -1, 2).pids is None
    assert cgroups.Limits.from_options(None, None, 0, 2).pids is None
    assert cgroups.Limits.from_options("64m", 1, 50, 2) == cgroups.Limits(64 << 20, 1, 50)


@pytest.mark.parametrize(("swap", "reservation", "words"), [
    ("32m", None, "invalid --memory-swap 32m: minimum memoryswap limit should be larger than memory limit, see usage"),
    (None, "128m", "invalid --memory-reservation 128m: minimum memory limit can not be less than memory "
                   "reservation limit, see usage"),
    (None, "1m", "invalid --memory-reservation 1m: minimum memory reservation allowed is 6MB"),
    ("lots", None, "invalid --memory-swap 'lots': invalid size: use a number with an optional unit b, k, m, g, t "
                   "or p")])
def test_swap_and_reservation_against_memory(swap: str | None, reservation: str | None, words: str) -> None:
    assert refused(cgroups.Limits.from_options, "64m", None, None, 2, swap=swap, reservation=reservation) == words


def test_swap_needs_memory_and_takes_minus_one() -> None:
    assert refused(cgroups.Limits.from_options, None, None, None, 2, swap="1g") == \
        "invalid --memory-swap: you should always set the memory limit when using memoryswap limit, see usage"
    assert cgroups.Limits.from_options("64m", None, None, 2, swap="-1").swap == -1
    assert cgroups.Limits.from_options("64m", None, None, 2, swap="64m", reservation="64m") == \
        cgroups.Limits(64 << 20, None, None, 64 << 20, 64 << 20)
    assert cgroups.Limits.from_options("64m", None, None, 2, swap="0").swap is None  # Docker: 0 is unset


def test_cpu_shares_negative_is_refused_and_zero_is_the_default() -> None:
    assert refused(cgroups.Limits.from_options, None, None, None, 2, shares=-1) == \
        "invalid --cpu-shares -1: a weight of 0 (the default, 1024) or more"
    assert cgroups.Limits.from_options(None, None, None, 2, shares=0).shares is None
    assert cgroups.Limits.from_options(None, None, None, 2, shares=512).shares == 512


# -- --cap-add, --cap-drop, --privileged, --security-opt ---------------------------------------------------------

def test_capabilities_drop_then_add_in_dockers_order() -> None:
    privileges = security.Privileges.from_options(cap_add=["sys_time", "CAP_NET_ADMIN"], cap_drop=["NET_RAW"])
    assert privileges.capabilities == (security.DOCKER_DEFAULT_CAPS - {"NET_RAW"}) | {"SYS_TIME", "NET_ADMIN"}
    assert security.Privileges.from_options(cap_add=["CHOWN"], cap_drop=["ALL"]).capabilities == {"CHOWN"}
    assert security.Privileges.from_options(cap_add=["ALL"]).capabilities == set(security.CAPABILITIES)


def test_unknown_capability_is_refused() -> None:
    assert refused(security.Privileges.from_options, cap_add=["FLY"]) == "unknown capability 'FLY'"
    assert refused(security.Privileges.from_options, cap_drop=["cap_nope"]) == "unknown capability 'cap_nope'"


@pytest.mark.parametrize(("opts", "nnp", "seccomp"), [
    (["no-new-privileges"], True, None), (["no-new-privileges=true"], True, None),
    (["no-new-privileges:true", "no-new-privileges=false"], False, None),
    (["seccomp=unconfined"], False, security.SECCOMP_UNCONFINED), (["seccomp:builtin"], False, None)])
def test_security_opts_as_docker_reads_them(opts: list[str], nnp: bool, seccomp: str | None) -> None:
    privileges = security.Privileges.from_options(security_opts=opts)
    assert (privileges.no_new_privileges, privileges.seccomp) == (nnp, seccomp)


@pytest.mark.parametrize("opt", ["apparmor=unconfined", "seccomp=", "label:disable", "no-new-privileges=maybe"])
def test_unsupported_security_opt_is_refused(opt: str) -> None:
    assert refused(security.Privileges.from_options, security_opts=[opt]) == \
        f"unsupported --security-opt {opt!r} (supported: no-new-privileges[=true|false], seccomp=unconfined, " \
        "seccomp=PROFILE.json)"


def test_a_missing_seccomp_profile_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    assert refused(security.Privileges.from_options, security_opts=[f"seccomp={missing}"]) == \
        f"cannot read seccomp profile {missing}: No such file or directory"


def test_privileged_is_every_capability_and_no_filter() -> None:
    privileges = security.Privileges.from_options(privileged=True, security_opts=["no-new-privileges"])
    assert privileges.capabilities == set(security.CAPABILITIES) and privileges.seccomp == "unconfined"
    assert privileges.privileged and privileges.no_new_privileges


# -- --log-driver, --log-opt ------------------------------------------------------------------------------------

def test_log_config_defaults_and_dockers_rules() -> None:
    default = LogConfig.parse(None, [])
    assert (default.driver, default.max_size, default.max_file) == ("json-file", 20_000_000, 5)
    assert LogConfig.parse("json-file", ["max-size=1m"]).max_file == 1  # json-file's own default with max-size
    assert LogConfig.parse("local", ["max-size=1m"]).max_file == 5
    assert LogConfig.parse(None, ["max-file=3"]).max_size == 20_000_000
    assert LogConfig.parse(None, ["max-size=1k", "max-file=2"]).to_json() == \
        {"Type": "json-file", "Config": {"max-size": "1k", "max-file": "2"}}


@pytest.mark.parametrize(("driver", "opts", "text"), [
    ("syslog", [], "logging driver 'syslog' is not supported: use json-file, local or none"),
    ("foo", [], "logger: no log driver named 'foo' is registered (json-file, local or none)"),
    (None, ["foo=1"], "unknown log opt 'foo' for json-file log driver"),
    (None, ["max-file=0"], "max-file cannot be less than 1"),
    (None, ["max-file=x"], "invalid --log-opt max-file=x: a whole number"),
    (None, ["compress=true"], "log opt compress=true is not supported: rotated logs are kept uncompressed"),
    (None, ["max-file=²"], "invalid --log-opt max-file=²: a whole number"),
    (None, ["max-file=٣"], "invalid --log-opt max-file=٣: a whole number"),
    (None, ["max-file=--5"], "invalid --log-opt max-file=--5: a whole number"),
    (None, ["max-size=ten"], "invalid --log-opt max-size=ten: use a size such as 10k, 20m or 1g"),
    ("none", ["max-size=1m"], "unknown log opt 'max-size' for none log driver"),
    (None, ["tag=x"], "log opt 'tag' of the json-file log driver is not supported"),
    (None, ["max-size"], "invalid --log-opt 'max-size': use KEY=VALUE")])
def test_log_options_docker_refuses(driver: str | None, opts: list[str], text: str) -> None:
    assert refused(LogConfig.parse, driver, opts) == text


def test_a_huge_max_file_is_a_one_line_refusal() -> None:
    assert "max-file" in refused(LogConfig.parse, None, ["max-file=" + "9" * 5000])


# -- --network and its options ----------------------------------------------------------------------------------

def test_port_specs_parse_as_docker_does() -> None:
    assert PortSpec.parse("80") == PortSpec(80)
    assert PortSpec.parse("8080:80") == PortSpec(80, "tcp", 8080)
    assert PortSpec.parse("127.0.0.1:8080:80/udp") == PortSpec(80, "udp", 8080, "127.0.0.1")
    assert PortSpec.parse("127.0.0.1::80") == PortSpec(80, "tcp", 0, "127.0.0.1")
    assert PortSpec.parse("0.0.0.0:1:2") == PortSpec(2, "tcp", 1, "")
    assert str(PortSpec.parse("8080:80")) == "0.0.0.0:8080->80/tcp"


@pytest.mark.parametrize(("text", "words"), [
    ("x", "invalid port 'x' in 'x': a number from 1 to 65535 (ranges are not supported)"),
    ("80/sctp", "invalid protocol 'sctp' in '80/sctp': tcp or udp"),
    ("0:80", "invalid port '0' in '0:80': a number from 1 to 65535 (ranges are not supported)"),
    ("70000", "invalid port '70000' in '70000': a number from 1 to 65535 (ranges are not supported)"),
    ("1.2.3:80:80", "invalid host address '1.2.3' in '1.2.3:80:80'"),
    ("8000-8001:80", "invalid port '8000-8001' in '8000-8001:80': a number from 1 to 65535 (ranges are not "
                     "supported)"),
    ("[::1]:80:80", "IPv6 host address in '[::1]:80:80': only IPv4 is published (README: not done)"),
    ("a:b:c:d", "invalid port specification 'a:b:c:d': use [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]")])
def test_port_specs_docker_refuses(text: str, words: str) -> None:
    assert refused(PortSpec.parse, text) == words


def test_network_modes() -> None:
    assert NetworkMode.parse("bridge") == NetworkMode("bridge", "bridge") == NetworkMode.parse("default")
    assert NetworkMode.parse("none").network is None and NetworkMode.parse("host").network is None
    assert NetworkMode.parse("container:web") == NetworkMode("container", "web")
    assert NetworkMode.parse("mynet").network == "mynet"
    assert str(NetworkMode.parse("container:abc")) == "container:abc"


def test_bad_network_modes_are_refused() -> None:
    assert refused(NetworkMode.parse, "container:") == "--network container: needs a container name or ID"
    for bad in ("-x", "a b"):
        assert refused(NetworkMode.parse, bad) == \
            f"invalid network name {bad!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"


def test_add_host_forms() -> None:
    assert parse_add_host("db:192.0.2.9") == ("db", "192.0.2.9")
    assert parse_add_host("db=192.0.2.9") == ("db", "192.0.2.9")
    assert parse_add_host("v6:[::1]") == ("v6", "::1")  # the first colon splits; brackets are Docker's
    assert parse_add_host("gw:host-gateway") == ("gw", "host-gateway")
    assert refused(parse_add_host, "h") == "invalid --add-host 'h': use HOST:IP"
    assert refused(parse_add_host, "h:nope") == "invalid IP address 'nope' in --add-host 'h:nope'"


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"mac": "01:00:00:00:00:01"}, "invalid MAC address '01:00:00:00:00:01': a multicast address"),
    ({"mac": "zz"}, "invalid MAC address 'zz'"), ({"dns": ("x",)}, "invalid --dns 'x': an IP address"),
    ({"add_hosts": ("h",)}, "invalid --add-host 'h': use HOST:IP"),
    ({"aliases": ("a b",)}, "invalid --network-alias 'a b'")])
def test_endpoint_options_are_checked_by_both_of_their_types(kwargs: dict[str, object], words: str) -> None:
    """The checks live once, on EndpointOptions: a container's saved NetworkConfig and an attach's
    AttachOptions refuse the same values in the same words."""
    assert refused(EndpointOptions, **kwargs) == words
    assert refused(NetworkConfig, mode=NetworkMode.parse("bridge"), **kwargs) == words
    assert refused(AttachOptions, container_id="c", name="n", hostname="h", **kwargs) == words


def test_attach_options_check_the_network_name() -> None:
    assert refused(AttachOptions, container_id="c", name="n", hostname="h", network="a b") == \
        "invalid network name 'a b': only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"


@pytest.mark.parametrize(("mode", "kwargs", "words"), [
    ("none", {"publish": ["80"]}, "conflicting options: port publishing and the container type network mode"),
    ("host", {"publish_all": True}, "conflicting options: port publishing and the container type network mode"),
    ("container:x", {"dns": ["192.0.2.53"]}, "conflicting options: dns and the network mode"),
    ("container:x", {"add_hosts": ["h:192.0.2.1"]}, "conflicting options: dns and the network mode"),
    ("host", {"mac": "02:00:00:00:00:01"}, "conflicting options: mac-address and the network mode"),
    ("bridge", {"ip": "10.88.0.9"},
     "user specified IP address and network aliases are supported on user defined networks only"),
    ("bridge", {"aliases": ["db"]},
     "user specified IP address and network aliases are supported on user defined networks only"),
    ("app", {"ip": "10.89.0"}, "invalid IPv4 address '10.89.0' for --ip"),
    ("app", {"ip": "::1"}, "invalid IPv4 address '::1' for --ip")])
def test_what_a_network_mode_cannot_honour_is_refused(mode: str, kwargs: dict[str, object], words: str) -> None:
    assert refused(NetworkConfig.parse, NetworkMode.parse(mode), **kwargs) == words


def test_network_config_parses_the_options_of_its_mode() -> None:
    config = NetworkConfig.parse(NetworkMode.parse("app"), publish=["127.0.0.1:8080:80/udp", "81"], publish_all=True,
                                 exposed=["80/tcp"], dns=["192.0.2.53"], add_hosts=["x:192.0.2.9"],
                                 mac="02:AA:bb:CC:dd:EE", ip="10.89.0.9", aliases=["db"])
    assert config == NetworkConfig(mode=NetworkMode("user", "app"),
                                   publish=(PortSpec(80, "udp", 8080, "127.0.0.1"), PortSpec(81)), publish_all=True,
                                   exposed=("80/tcp",), dns=("192.0.2.53",), add_hosts=("x:192.0.2.9",),
                                   mac="02:aa:bb:cc:dd:ee", ip="10.89.0.9", aliases=("db",))


def test_the_network_choice_is_saved_in_config_json_and_reads_back() -> None:
    config = NetworkConfig(mode=NetworkMode.parse("app"), publish=(PortSpec.parse("127.0.0.1:8080:80/udp"),
                                                                   PortSpec(81)),
                           publish_all=True, exposed=("80/tcp",), dns=("192.0.2.53",), add_hosts=("x:192.0.2.9",),
                           mac="02:aa:bb:cc:dd:ee", ip="10.89.0.9", aliases=("db",))
    spec = Spec(id="c" * 64, name="c", image="i", image_id="sha256:" + "0" * 64, chain_ids=(), args=("true",),
                env=(), cwd="/", user="0", hostname="c", bundle="/b", network=config)
    doc = spec.to_oci()
    assert json.loads(doc["annotations"][A_NETWORK])["mode"] == "app"
    assert Spec.from_oci(doc).network == config
    del doc["annotations"][A_NETWORK]  # every record this version writes has it: one without is damaged
    with pytest.raises(StrataError) as caught:
        Spec.from_oci(doc)
    assert caught.value.kind == Kind.INTEGRITY and A_NETWORK in str(caught.value)


# -- -e, --env-file ---------------------------------------------------------------------------------------------

def test_env_sets_copies_and_drops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_RUNNER", "mine")
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    env = merge_env(["PATH=/bin", "KEEP=1", "NOT_SET_ANYWHERE=image"],
                    ["KEEP=2", "FROM_RUNNER", "NOT_SET_ANYWHERE", "EMPTY=", "EQ=a=b"])
    assert env == {"PATH": "/bin", "KEEP": "2", "FROM_RUNNER": "mine", "EMPTY": "", "EQ": "a=b"}


@pytest.mark.parametrize("item", ["=x", "="])
def test_env_without_a_name_is_refused(item: str) -> None:
    assert refused(merge_env, [], [item]) == f"invalid environment variable {item!r}"


def test_env_file_lines_as_docker_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.write_text("# a comment\n\nA=1\n  B=two words \n   # indented comment\nC\n")
    assert read_env_file(str(path)) == ["A=1", "B=two words ", "C"]


def test_a_missing_env_file_is_refused(tmp_path: Path) -> None:
    assert refused(read_env_file, str(tmp_path / "nope")) == \
        f"cannot read env file {tmp_path / 'nope'}: No such file or directory"


# -- resolve: an image config and the options become a spec -----------------------------------------------------

def stored_image(config: Mapping[str, object], name: str = "docker.io/library/app:1") -> StoredImage:
    """An image as the store would hand it to create: a config with one layer, a manifest naming it."""
    raw = json.dumps({"architecture": "amd64", "os": "linux", "config": config,
                      "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": f"sha256:{hashlib.sha256(raw).hexdigest()}",
                                      "size": len(raw)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                       "digest": "sha256:" + "2" * 64, "size": 1}]}).encode()
    entry = Descriptor(OCI_MANIFEST, Digest("sha256", hashlib.sha256(manifest).hexdigest()), len(manifest))
    return make_stored_image(name, entry, manifest, raw)


IMAGE: dict[str, object] = {"Entrypoint": ["/entry"], "Cmd": ["serve"], "Env": ["PATH=/image/bin", "LANG=C"],
                            "WorkingDir": "/app", "User": "app", "ExposedPorts": {"8080/tcp": {}, "53/udp": {}}}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """An empty store, and no settings file: the defaults (bridge, our executor) whoever runs the tests."""
    monkeypatch.setenv("STRATA_CONFIG", str(tmp_path / "no-settings.json"))
    return Store(tmp_path / "store")


def test_resolve_takes_the_images_config_by_default(store: Store) -> None:
    image = stored_image(IMAGE)
    spec = resolve(RunOptions(image="app:1"), image, store)
    assert spec.args == ("/entry", "serve") and spec.entrypoint == ("/entry",)
    assert spec.cwd == "/app" and spec.user == "app"
    assert spec.name == "" and spec.hostname == spec.id[:12] and len(spec.id) == 64  # named when recorded
    assert dict(e.split("=", 1) for e in spec.env) == {"PATH": "/image/bin", "LANG": "C", "HOSTNAME": spec.id[:12]}
    assert (spec.image, spec.image_id) == ("docker.io/library/app:1", str(image.image_id))
    assert spec.chain_ids == ("sha256:" + "1" * 64,)
    assert spec.runtime == "" and spec.namespaces == NAMESPACES
    # default: no --network was given (inspect's NetworkMode says "default", as Docker 20.10's)
    assert spec.network == NetworkConfig(mode=NetworkMode("bridge", "bridge"), exposed=("53/udp", "8080/tcp"),
                                         default=True)
    assert spec.privileges.capabilities == security.DOCKER_DEFAULT_CAPS and spec.seccomp is not None
    assert spec.masked_paths and spec.readonly_paths
    assert [r.type for r in spec.rlimits] == ["RLIMIT_NOFILE"]  # the runner's own, written down
    assert spec.log == LogConfig()


def test_resolve_applies_every_option(store: Store, tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("FROM_FILE=1\nLANG=file\n")
    spec = resolve(RunOptions(
        image="app:1", command=["sh", "-c", "true"], name="web", hostname="box", env=["LANG=en"],
        env_files=[str(env_file)], workdir="/srv", user="0:0", tty=True, interactive=True, remove=True, init=True,
        read_only=True, volumes=["/srv:/data:ro"], tmpfs=["/scratch:size=1m"], memory="64m", pids_limit=50,
        cpu_shares=512, ulimits=["nofile=100:200", "core=0"], cap_drop=["ALL"], cap_add=["CHOWN"],
        security_opts=["no-new-privileges"], log_driver="local", log_opts=["max-size=1m"], runtime="strata",
        network="none"), stored_image(IMAGE), store)
    assert spec.args == (INIT_PATH, "--", "/entry", "sh", "-c", "true") and spec.argv == ("/entry", "sh", "-c", "true")
    assert (spec.name, spec.hostname, spec.cwd, spec.user) == ("web", "box", "/srv", "0:0")
    env = dict(e.split("=", 1) for e in spec.env)
    assert (env["LANG"], env["FROM_FILE"], env["HOSTNAME"], env["TERM"]) == ("en", "1", "box", "xterm")
    assert spec.terminal and spec.interactive and spec.auto_remove and spec.init and spec.read_only
    assert spec.volumes == (Volume("/srv", "/data", True),) and spec.tmpfs[0].data == "size=1m"
    assert (spec.limits.memory, spec.limits.pids, spec.limits.shares) == (64 << 20, 50, 512)
    assert spec.rlimits == (Rlimit("RLIMIT_NOFILE", 100, 200), Rlimit("RLIMIT_CORE", 0, 0))
    assert spec.capabilities == {"CHOWN"} and spec.no_new_privileges
    assert (spec.log.driver, spec.log.max_size) == ("local", 1_000_000)
    assert spec.network == NetworkConfig(mode=NetworkMode("none"), exposed=("53/udp", "8080/tcp"))


def test_a_resolved_spec_reads_back_from_its_config_json(store: Store) -> None:
    spec = resolve(RunOptions(image="app:1", volumes=["/srv:/data"], tmpfs=["/t"], ulimits=["nproc=9"],
                              publish=["8080:80"], dns=["192.0.2.53"]), stored_image(IMAGE), store)
    assert Spec.from_oci(spec.to_oci()) == spec


def test_a_new_entrypoint_drops_the_images_cmd(store: Store) -> None:
    image = stored_image(IMAGE)
    assert resolve(RunOptions(image="app:1", entrypoint="/bin/echo"), image, store).args == ("/bin/echo",)
    assert command_line(image, RunOptions(image="app:1", entrypoint="", command=["ls"])) == ((), ("ls",))


def test_no_command_at_all_is_refused(store: Store) -> None:
    image = stored_image({}, "docker.io/library/empty:latest")
    assert refused(resolve, RunOptions(image="empty"), image, store) == \
        "no command specified: docker.io/library/empty:latest has no Entrypoint or Cmd; give one"


def test_a_relative_working_directory_is_refused(store: Store) -> None:
    assert refused(resolve, RunOptions(image="app:1", workdir="srv"), stored_image(IMAGE), store) == \
        "the working directory 'srv' is invalid: it needs to be an absolute path"


def test_privileged_has_no_masked_paths_and_no_filter(store: Store) -> None:
    spec = resolve(RunOptions(image="app:1", privileged=True), stored_image(IMAGE), store)
    assert spec.privileged and spec.seccomp is None and spec.masked_paths == spec.readonly_paths == ()


def test_host_network_shares_the_hosts_namespace_and_name(store: Store) -> None:
    spec = resolve(RunOptions(image="app:1", network="host"), stored_image(IMAGE), store)
    assert "network" not in spec.namespaces and spec.hostname == socket.gethostname()
    assert resolve(RunOptions(image="app:1", network="host", hostname="mine"), stored_image(IMAGE),
                   store).hostname == "mine"


def test_the_settings_files_network_is_the_default(store: Store, tmp_path: Path) -> None:
    (tmp_path / "no-settings.json").write_text(json.dumps({"network": "none"}))
    assert resolve(RunOptions(image="app:1"), stored_image(IMAGE), store).network.mode == NetworkMode("none")
    assert resolve(RunOptions(image="app:1", network="bridge"), stored_image(IMAGE),
                   store).network.mode.kind == "bridge"


def test_network_options_are_checked_when_resolved(store: Store) -> None:
    image = stored_image(IMAGE)
    assert refused(resolve, RunOptions(image="app:1", network="none", publish=["80"]), image, store) == \
        "conflicting options: port publishing and the container type network mode"
    assert refused(resolve, RunOptions(image="app:1", publish=["80/sctp"]), image, store) == \
        "invalid protocol 'sctp' in '80/sctp': tcp or udp"
    assert refused(resolve, RunOptions(image="app:1", mac="zz"), image, store) == "invalid MAC address 'zz'"


def test_container_network_conflicts_with_hostname_and_needs_the_container(store: Store) -> None:
    image = stored_image(IMAGE)
    assert refused(resolve, RunOptions(image="app:1", network="container:web", hostname="h"), image, store) == \
        "conflicting options: hostname and the network mode"
    with pytest.raises(StrataError) as caught:
        resolve(RunOptions(image="app:1", network="container:web"), image, store)
    assert caught.value.kind == Kind.NOT_FOUND and str(caught.value) == "no such container: web"


@pytest.mark.parametrize(("options", "words"), [
    ({"volumes": ["data:/data"]}, "invalid volume 'data:/data': named volumes are not supported; give an absolute "
                                  "host path"),
    ({"tmpfs": ["/t:bogus"]}, "invalid --tmpfs option 'bogus'"),
    ({"ulimits": ["files=1"]}, "invalid --ulimit 'files=1': invalid ulimit type: files"),
    ({"memory": "1k"}, "invalid --memory '1k': minimum memory limit allowed is 6MB"),
    ({"cap_add": ["FLY"]}, "unknown capability 'FLY'"),
    ({"log_driver": "syslog"}, "logging driver 'syslog' is not supported: use json-file, local or none"),
    ({"env": ["=x"]}, "invalid environment variable '=x'"),
    ({"runtime": "/nonexistent/runc"}, "OCI runtime '/nonexistent/runc' not found: give runc, crun, strata or the "
                                       "path of an executable")])
def test_resolve_refuses_each_bad_option_in_its_types_words(store: Store, options: dict[str, object],
                                                           words: str) -> None:
    assert refused(resolve, RunOptions(image="app:1", **options), stored_image(IMAGE), store) == words  # type: ignore[arg-type]


def test_run_options_are_made_by_keyword_only() -> None:
    with pytest.raises(TypeError):
        RunOptions("app:1", ["true"])  # type: ignore[call-arg]
    assert RunOptions(image="app:1").command == () and RunOptions(image="app:1").network is None


def test_an_image_without_path_or_ports_gets_dockers_defaults(store: Store) -> None:
    spec = resolve(RunOptions(image="bare", command=["true"]), stored_image({}, "docker.io/library/bare:1"), store)
    assert dict(e.split("=", 1) for e in spec.env)["PATH"] == DEFAULT_PATH
    assert spec.cwd == "/" and spec.user == "" and spec.network.exposed == () and spec.entrypoint == ()


def test_a_ulimit_nofile_replaces_the_runners_own(store: Store) -> None:
    spec = resolve(RunOptions(image="app:1", ulimits=["nproc=5", "nofile=10:20"]), stored_image(IMAGE), store)
    assert spec.rlimits == (Rlimit("RLIMIT_NOFILE", 10, 20), Rlimit("RLIMIT_NPROC", 5, 5))


def test_memory_swap_reservation_and_cpus_reach_the_spec(store: Store) -> None:
    spec = resolve(RunOptions(image="app:1", memory="64m", memory_swap="-1", memory_reservation="32m", cpus=0.5),
                   stored_image(IMAGE), store)
    assert spec.limits == cgroups.Limits(64 << 20, 0.5, None, -1, 32 << 20)
    doc = spec.to_oci()["linux"]["resources"]
    assert doc["memory"] == {"limit": 64 << 20, "swap": -1, "reservation": 32 << 20}
    assert doc["cpu"] == {"quota": cgroups.CPU_PERIOD_US // 2, "period": cgroups.CPU_PERIOD_US}


def test_a_user_network_must_exist(store: Store) -> None:
    with pytest.raises(StrataError) as caught:
        resolve(RunOptions(image="app:1", network="mynet"), stored_image(IMAGE), store)
    assert caught.value.kind == Kind.NOT_FOUND and str(caught.value) == "network mynet not found"


def test_ip_and_aliases_on_the_default_bridge_are_refused_when_resolved(store: Store) -> None:
    assert refused(resolve, RunOptions(image="app:1", ip="10.88.0.5"), stored_image(IMAGE), store) == \
        "user specified IP address and network aliases are supported on user defined networks only"


def test_a_security_opt_profile_is_read_and_kept(store: Store, tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW"}))
    spec = resolve(RunOptions(image="app:1", security_opts=[f"seccomp={profile}"]), stored_image(IMAGE), store)
    assert spec.seccomp is not None and spec.seccomp["defaultAction"] == "SCMP_ACT_ALLOW"
    assert Spec.from_oci(spec.to_oci()).seccomp == spec.seccomp
