"""runner-oci's reading of a bundle, without root: config.json as Docker 20.10, containerd 1.6 and podman 4.3 wrote
it on this machine (tests/unit/oci_configs, taken by the callers' recon, /work/wt/oci-callers-recon.md) parses;
every field runner-oci cannot do is refused in one line naming it, while the zero values callers write for "unset"
pass; sysctls only where the container's own namespaces hold them; the device list, the systemd cgroupsPath and the
mount options as runc makes them; the features document and every key config.py takes checked against the
runtime-spec's own JSON schema (tests/runtime_spec_schema), so that runner-oci never takes a key the spec lacks."""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import referencing
import referencing.jsonschema

from runner import linux
from runner.isolation import devcgroup
from runner.oci import config, features, init, mounts
from shared.errors import StrataError

HERE = Path(__file__).resolve().parent
SCHEMA_DIR = HERE.parent / "runtime_spec_schema"
CALLERS = ("docker", "containerd", "podman")
BUNDLE = Path("/bundle")


def real(caller: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((HERE / "oci_configs" / f"{caller}.json").read_text())
    return doc


def minimal(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                           "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
                           "linux": {"namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]}}
    doc.update(extra)
    return doc


def parse(doc: dict[str, Any]) -> config.Config:
    return config.parse(doc, BUNDLE)


def refusal(doc: dict[str, Any]) -> str:
    with pytest.raises(StrataError) as e:
        parse(doc)
    message = str(e.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# -- the callers' own documents --------------------------------------------------------------------------------


@pytest.mark.parametrize("caller", CALLERS)
def test_a_callers_config_parses(caller: str) -> None:
    doc = real(caller)
    c = parse(doc)
    assert c.process is not None and c.process.args == tuple(doc["process"]["args"])
    assert c.root == (BUNDLE / "rootfs" if caller == "containerd" else Path(doc["root"]["path"]))
    assert [m.destination for m in c.mounts] == [m["destination"] for m in doc["mounts"]]
    assert {t for t, _ in c.namespaces} == {"pid", "network", "ipc", "uts", "mount"}
    assert c.cgroups_path == doc["linux"]["cgroupsPath"]
    assert (c.seccomp is not None) == (caller != "containerd")


def test_what_docker_asks_for_is_read_as_written() -> None:
    c = parse(real("docker"))
    assert c.hostname and c.hooks["prestart"][0].args[0] == "libnetwork-setkey"
    assert c.sysctl == {"net.ipv4.ip_unprivileged_port_start": "0", "net.ipv4.ping_group_range": "0 2147483647"}
    assert c.process is not None and c.process.oom_score_adj == 0 and c.process.additional_gids == (0,)
    assert len(c.process.caps("bounding")) == 14 and not c.process.caps("inheritable")
    assert c.limits.memory is None and c.limits.shares is None  # the zero values Docker writes for "unset"
    assert len(c.masked_paths) == 10 and "/proc/sys" in c.readonly_paths


def test_what_podman_and_containerd_ask_for_is_read_as_written() -> None:
    pm, ctr = parse(real("podman")), parse(real("containerd"))
    assert pm.process is not None and pm.process.umask == 0o22 and pm.limits.pids == 2048
    assert pm.annotations["io.container.manager"] == "libpod"
    assert ctr.process is not None and ctr.process.no_new_privileges and ctr.limits.shares == 1024
    assert ("RLIMIT_NOFILE", 1024, 1024) in ctr.process.rlimits


# -- refused by name -------------------------------------------------------------------------------------------


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        doc = doc.setdefault(key, {})
    doc[last] = value


REFUSED = [
    # mappings without a user namespace of the container's own
    ("linux.uidMappings", [{"containerID": 0, "hostID": 100000, "size": 65536}], "linux.uidMappings"),
    ("linux.gidMappings", [{"containerID": 0, "hostID": 100000, "size": 65536}], "linux.gidMappings"),
    ("linux.intelRdt", {"closID": "x"}, "linux.intelRdt"),
    ("linux.personality", {"domain": "LINUX32"}, "linux.personality"),
    ("linux.mountLabel", "system_u:object_r:x", "linux.mountLabel"),
    ("linux.timeOffsets", {"monotonic": {"secs": 1}}, "linux.timeOffsets"),
    ("linux.resources.hugepageLimits", [{"pageSize": "2MB", "limit": 1}], "linux.resources.hugepageLimits"),
    ("linux.resources.blockIO", {"weight": 500}, "linux.resources.blockIO.weight"),
    ("linux.resources.blockIO", {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1}]},
     "linux.resources.blockIO.throttleReadBpsDevice"),
    ("linux.resources.cpu", {"realtimeRuntime": 1000}, "linux.resources.cpu.realtimeRuntime"),
    ("linux.resources.network", {"classID": 1}, "linux.resources.network"),
    ("linux.resources.rdma", {"mlx": {"hcaHandles": 1}}, "linux.resources.rdma"),
    ("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/x.sock"},
     "linux.seccomp.listenerPath"),
    ("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW",
                       "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}, "SCMP_ACT_NOTIFY"),
    ("process.apparmorProfile", "docker-default", "process.apparmorProfile"),
    ("process.selinuxLabel", "system_u:system_r:container_t", "process.selinuxLabel"),
    ("process.ioPriority", {"class": "IOPRIO_CLASS_IDLE"}, "process.ioPriority"),
    ("process.scheduler", {"policy": "SCHED_IDLE"}, "process.scheduler"),
    ("process.commandLine", "cmd.exe", "process.commandLine"),
    ("process.user.username", "root", "process.user.username"),
    ("windows", {"layerFolders": []}, "windows"),
    ("solaris", {}, "solaris"),
]


@pytest.mark.parametrize(("path", "value", "named"), REFUSED, ids=[f"{r[0]}={json.dumps(r[1])[:30]}" for r in REFUSED])
def test_an_unsupported_field_is_refused_in_one_line_naming_it(path: str, value: Any, named: str) -> None:
    doc = minimal()
    _set(doc, path, value)
    message = refusal(doc)
    assert named in message, message


@pytest.mark.parametrize(("entry", "named"), [({"type": "time"}, "time"), ({"type": "nosuch"}, "nosuch")])
def test_a_namespace_runner_oci_cannot_make_is_refused(entry: dict[str, str], named: str) -> None:
    doc = minimal()
    doc["linux"]["namespaces"].append(entry)
    message = refusal(doc)
    assert "linux.namespaces[5]" in message and named in message


def test_a_user_namespace_of_its_own_takes_its_mappings() -> None:
    doc = minimal()
    doc["linux"]["namespaces"].append({"type": "user"})
    assert "needs linux.uidMappings and gidMappings" in refusal(doc)
    doc["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    doc["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 1000}]
    c = parse(doc)
    assert (c.namespace("user"), c.uid_map, c.gid_map) == ("", ((0, 100000, 65536),), ((0, 200000, 1000),))


def test_a_user_namespace_is_joined_by_its_path() -> None:
    doc = minimal()
    doc["linux"]["namespaces"].append({"type": "user", "path": "/proc/1/ns/user"})
    assert parse(doc).namespace("user") == "/proc/1/ns/user"


@pytest.mark.parametrize("option", ["idmap", "ridmap", "tmpcopyup"])
def test_a_mount_option_runner_oci_cannot_do_is_refused(option: str) -> None:
    with pytest.raises(StrataError, match=f"mounts\\[2\\].options '{option}'"):
        mounts.Options(["rbind", option], "mounts[2]")


def test_mount_id_mappings_are_refused() -> None:
    doc = minimal(mounts=[{"destination": "/x", "type": "bind", "source": "/tmp", "options": ["rbind"],
                           "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}])
    assert "mounts[0].uidMappings" in refusal(doc)


def test_zero_values_are_unset_not_refused() -> None:
    doc = minimal()
    doc["linux"].update({"uidMappings": [], "gidMappings": [], "mountLabel": "", "intelRdt": None,
                         "resources": {"blockIO": {"weight": 0, "leafWeight": 0, "weightDevice": []},
                                       "memory": {"disableOOMKiller": False, "kernel": 0, "limit": 0, "swap": 0},
                                       "cpu": {"shares": 0, "quota": 0, "period": 0, "cpus": "", "mems": ""},
                                       "hugepageLimits": [], "pids": {"limit": 0}}})
    doc["process"].update({"apparmorProfile": "", "selinuxLabel": "", "noNewPrivileges": False,
                           "oomScoreAdj": 0, "terminal": False})
    doc["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": ""}
    c = parse(doc)
    assert c.limits.memory is None and c.limits.pids is None and c.limits.cpus is None


@pytest.mark.parametrize(("path", "value", "named"), [
    ("process.args", [], "process.args"), ("process.cwd", "relative", "process.cwd"),
    ("process.user.uid", -1, "process.user.uid"), ("process.oomScoreAdj", 1001, "process.oomScoreAdj"),
    ("process.rlimits", [{"type": "RLIMIT_NOPE", "soft": 1, "hard": 1}], "process.rlimits[0].type"),
    ("process.capabilities", {"bounding": ["CAP_NOPE"]}, "process.capabilities.bounding"),
    ("linux.devices", [{"path": "/etc/x", "type": "c", "major": 1, "minor": 3}], "linux.devices[0].path"),
    ("linux.devices", [{"path": "/dev/../etc/x", "type": "b", "major": 8, "minor": 0}], "linux.devices[0].path"),
    ("linux.resources.devices", [{"allow": True, "access": "rwx"}], "linux.resources.devices[0].access"),
    ("linux.rootfsPropagation", "sideways", "linux.rootfsPropagation"),
    ("hooks.prestart", [{"path": "relative"}], "hooks.prestart[0].path"),
    ("ociVersion", "2.0.0", "ociVersion"), ("mounts", [{"destination": "x", "type": "tmpfs"}], "mounts[0]"),
])
def test_a_malformed_field_is_named(path: str, value: Any, named: str) -> None:
    doc = minimal()
    _set(doc, path, value)
    assert named in refusal(doc)


def test_a_namespace_listed_twice_is_refused() -> None:
    doc = minimal()
    doc["linux"]["namespaces"].append({"type": "pid"})
    assert "listed twice" in refusal(doc)


# -- sysctl: only what the container's own namespaces hold ----------------------------------------------------


@pytest.mark.parametrize(("key", "namespace"), [
    ("net.ipv4.ip_forward", "network"), ("net.core.somaxconn", "network"), ("kernel.shmmax", "ipc"),
    ("kernel.msgmax", "ipc"), ("kernel.sem", "ipc"), ("fs.mqueue.msg_max", "ipc"), ("kernel.domainname", "uts")])
def test_a_namespaced_sysctl_is_taken_with_its_namespace_and_refused_without(key: str, namespace: str) -> None:
    doc = minimal()
    doc["linux"]["sysctl"] = {key: "1"}
    assert parse(doc).sysctl == {key: "1"}
    doc["linux"]["namespaces"] = [n for n in doc["linux"]["namespaces"] if n["type"] != namespace]
    assert f"linux.sysctl.{key}" in refusal(doc)
    doc["linux"]["namespaces"].append({"type": namespace, "path": f"/proc/1/ns/{namespace}"})
    assert parse(doc).sysctl == {key: "1"}  # joined: still the container's own, as runc allows


@pytest.mark.parametrize("key", ["kernel.pid_max", "vm.overcommit_memory", "fs.file-max", "kernel.core_pattern",
                                 "net/../../kernel/core_pattern"])
def test_a_host_wide_sysctl_is_refused(key: str) -> None:
    doc = minimal()
    doc["linux"]["sysctl"] = {key: "1"}
    assert "linux.sysctl." in refusal(doc)


def test_a_sysctl_name_that_walks_out_of_proc_sys_is_refused() -> None:
    doc = minimal()
    doc["linux"]["sysctl"] = {"net.ipv4/../../../kernel.x": "1"}
    assert "not a sysctl name" in refusal(doc)


# -- the device list and the cgroup path, as runc makes them ---------------------------------------------------


def _devices(rules: list[dict[str, Any]], devices: list[dict[str, Any]] | None = None) -> tuple[devcgroup.Rule, ...]:
    doc = minimal()
    doc["linux"]["resources"] = {"devices": rules}
    if devices:
        doc["linux"]["devices"] = devices
    return init.device_rules(parse(doc))


def test_dockers_device_list_is_deny_all_with_the_defaults_and_its_own() -> None:
    rules = init.device_rules(parse(real("docker")))
    assert rules[0] == devcgroup.Rule(False)
    allowed = {(r.type, r.major, r.minor) for r in rules[1:] if r.allow}
    assert {("c", 1, 3), ("c", 1, 5), ("c", 5, 0), ("c", 136, None)} <= allowed
    assert all(r.allow for r in rules[1:])  # the deny of 10:229 is already the default: no exception


def test_an_allow_all_list_stays_allow_all() -> None:
    assert _devices([{"allow": True, "access": "rwm"}]) == (devcgroup.Rule(True),)


def test_no_device_list_denies_all_but_the_defaults_as_runc() -> None:
    """runc's emulator starts from a white-list: a config without device rules gets its default nodes only."""
    rules = _devices([])
    assert rules[0] == devcgroup.Rule(False)
    assert devcgroup.Rule(True, "c", 1, 3) in rules and devcgroup.Rule(True, "b", 8, 0) not in rules


def test_a_linux_device_is_allowed_after_the_rules() -> None:
    rules = _devices([{"allow": False, "access": "rwm"}],
                     [{"path": "/dev/loop9", "type": "b", "major": 7, "minor": 9}])
    assert devcgroup.Rule(True, "b", 7, 9) in rules


def test_a_later_rule_undoing_an_exception_is_refused() -> None:
    with pytest.raises(StrataError, match=r"linux\.resources\.devices"):
        _devices([{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 7, "minor": 1},
                  {"allow": False, "type": "c", "major": 7, "minor": 1}])


@pytest.mark.parametrize(("path", "systemd", "expected"), [
    ("", False, "/runner-oci/ID"), ("/default/ID", False, "/default/ID"), ("parent/ID", False, "parent/ID"),
    ("system.slice:docker:ID", True, "/system.slice/docker-ID.scope"),
    ("machine-libpod.slice:libpod:ID", True, "/machine.slice/machine-libpod.slice/libpod-ID.scope"),
    ("a-b-c.slice:p:ID", True, "/a.slice/a-b.slice/a-b-c.slice/p-ID.scope"),
    (":p:ID", True, "/system.slice/p-ID.scope"),
])
def test_cgroups_path(path: str, systemd: bool, expected: str) -> None:
    doc = minimal()
    doc["linux"]["cgroupsPath"] = path
    assert init.cgroups_path(parse(doc), "ID", systemd) == expected


def test_a_systemd_path_not_in_three_parts_is_refused() -> None:
    doc = minimal()
    doc["linux"]["cgroupsPath"] = "/plain/path"
    with pytest.raises(StrataError, match="slice:prefix:name"):
        init.cgroups_path(parse(doc), "ID", True)


# -- mount options ---------------------------------------------------------------------------------------------


def test_mount_options_sort_into_flags_propagation_recursive_and_data() -> None:
    o = mounts.Options(["nosuid", "noexec", "nodev", "ro", "rbind", "rprivate", "rro", "mode=755", "size=64k"], "m")
    assert o.flags == linux.MS_NOSUID | linux.MS_NOEXEC | linux.MS_NODEV | linux.MS_RDONLY | linux.MS_BIND | \
        linux.MS_REC
    assert o.propagation == linux.MS_PRIVATE | linux.MS_REC and o.rec_set == linux.MOUNT_ATTR_RDONLY
    assert o.data == "mode=755,size=64k" and o.bind
    assert o.attributes() == (linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NOEXEC | linux.MOUNT_ATTR_NODEV |
                              linux.MOUNT_ATTR_RDONLY, 0)


def test_a_later_mount_option_overrides_an_earlier_one() -> None:
    o = mounts.Options(["ro", "rw", "noexec", "exec"], "m")
    assert not o.flags & (linux.MS_RDONLY | linux.MS_NOEXEC)
    assert o.cleared & linux.MS_RDONLY and o.attributes() == (0, linux.MOUNT_ATTR_RDONLY | linux.MOUNT_ATTR_NOEXEC)
    assert mounts.Options(["defaults", "uid=5"], "m").data == "defaults,uid=5"  # a word of the fs's own


# -- against the runtime-spec's schema --------------------------------------------------------------------------


def _schema(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((SCHEMA_DIR / name).read_text())
    return doc


def _validator(name: str) -> jsonschema.protocols.Validator:
    def retrieve(uri: str) -> referencing.Resource[Any]:
        return referencing.Resource.from_contents(_schema(uri.rsplit("/", 1)[-1]), referencing.jsonschema.DRAFT4)

    registry: referencing.Registry[Any] = referencing.Registry(retrieve=retrieve)  # type: ignore[call-arg]
    return jsonschema.Draft4Validator(_schema(name), registry=registry)


def test_the_features_document_validates_against_the_features_schema() -> None:
    doc = features.features()
    errors = [e.message for e in _validator("features-schema.json").iter_errors(doc)]
    assert errors == []
    assert _validator("features-schema.json").is_valid(doc) and not _validator("features-schema.json").is_valid(
        {**doc, "linux": {**doc["linux"], "namespaces": ["nosuch"]}})  # the schema checks what it lists


def test_the_features_list_what_config_json_may_ask_for() -> None:
    doc = features.features()
    hooks = _schema("config-schema.json")["properties"]["hooks"]["properties"]
    assert set(doc["hooks"]) == set(hooks)
    # a namespace features offers is one create makes (user and time are refused: config.py)
    for kind in doc["linux"]["namespaces"]:
        c = parse(minimal(linux={"namespaces": [{"type": t} for t in {kind, "mount"}]}))
        assert c.namespace(kind) == ""
    for option in doc["mountOptions"]:
        mounts.Options([option], "m")  # each one a word Options knows, none refused


@pytest.mark.parametrize("caller", CALLERS)
def test_a_callers_config_is_valid_by_the_schema(caller: str) -> None:
    """The fixtures are real documents, so the schema (and so the key walk below) is the one they are written to."""
    assert [e.message for e in _validator("config-schema.json").iter_errors(real(caller))] == []


def _resolve(node: dict[str, Any], base: str) -> tuple[dict[str, Any], str]:
    """A schema node with its $ref followed (and anyOf/items of one entry): the node and the file it is in."""
    while True:
        if "$ref" in node:
            ref = node["$ref"]
            file, _, pointer = ref.partition("#")
            base = file.rsplit("/", 1)[-1] or base
            node = _schema(base)
            for part in pointer.strip("/").split("/") if pointer.strip("/") else []:
                node = node[part]
        elif node.get("type") == "array" and "items" in node:
            node = node["items"]
        elif "anyOf" in node and len(node["anyOf"]) == 1:
            node = node["anyOf"][0]
        else:
            return node, base


def _schema_keys(where: str) -> set[str]:
    """The properties the schema allows at WHERE (dotted, ``[]`` for an array's items)."""
    node, base = _resolve(_schema("config-schema.json"), "config-schema.json")
    for part in where.split("."):
        if not part:
            continue
        node, base = _resolve(node["properties"][part], base)
    return set(node.get("properties", {}))


# where each _obj call of config.py reads (its 2nd argument names it; a variable one is mapped by function)
WHERE_BY_FUNCTION = {"_namespaces": "linux.namespaces", "_device": "linux.devices", "_rule": "linux.resources.devices",
                     "_mount": "mounts", "_hooks": "hooks.prestart", "_process": "process.rlimits",
                     "_mappings": "linux.uidMappings"}


def _key_tuples() -> list[tuple[str, tuple[str, ...]]]:
    """Every (where, keys) config.py checks a JSON object against: the third argument of each ``_obj`` call."""
    source = Path(config.__file__).read_text()
    tree = ast.parse(source)
    names = {t.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
             for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Tuple)}
    out = []
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        for call in (c for c in ast.walk(fn) if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "_obj"):
            if len(call.args) < 3:
                continue
            keys_node, where_node = call.args[2], call.args[1]
            keys = names[keys_node.id] if isinstance(keys_node, ast.Name) else ast.literal_eval(keys_node)
            if isinstance(where_node, ast.Constant):
                where = "" if where_node.value == "config.json" else str(where_node.value)
            else:
                where = WHERE_BY_FUNCTION[fn.name]
            out.append((where, tuple(keys)))
    return out


def test_the_key_walk_finds_every_object_config_py_reads() -> None:
    wheres = {w for w, _ in _key_tuples()}
    assert {"", "linux", "process", "process.user", "linux.resources", "linux.resources.memory", "mounts",
            "linux.namespaces", "process.rlimits", "root"} <= wheres


@pytest.mark.parametrize(("where", "keys"), _key_tuples(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_key_config_py_takes_is_one_the_runtime_spec_defines(where: str, keys: tuple[str, ...]) -> None:
    allowed = _schema_keys(where)
    assert allowed, f"the schema has no object at {where!r}"
    assert sorted(set(keys) - allowed) == [], f"{where or 'config.json'}: keys the runtime-spec does not define"


def test_a_key_the_schema_defines_is_taken_or_refused_by_its_name() -> None:
    """The other direction, for the top and linux: a key the spec has is read, or refused naming it."""
    for where, known in (("", config.TOP), ("linux", config.LINUX)):
        for key in sorted(_schema_keys(where) - set(known) - {"$schema"}):
            doc = minimal()
            _set(doc, f"{where}.{key}".lstrip("."), {"x": 1})
            assert key in refusal(doc)


def test_copying_a_config_does_not_change_what_it_means() -> None:
    doc = real("docker")
    assert parse(copy.deepcopy(doc)) == parse(doc)


def test_the_hook_keys_runner_oci_reads_are_the_spec_s() -> None:
    """runner/oci/hooks.py reads ``hooks`` apart from config.py (start and delete read them alone): its kinds and a
    hook's keys are exactly the schema's."""
    from runner.oci import hooks

    assert set(hooks.HOOK_KINDS) == _schema_keys("hooks")
    assert {"path", "args", "env", "timeout"} == _schema_keys("hooks.prestart")


@pytest.mark.parametrize(("where", "value"), [("nosuchkey", 1), ("process.nosuchkey", 1), ("linux.nosuchkey", 1),
                                              ("linux.resources.memory", {"nosuchkey": 1})])
def test_a_property_the_spec_does_not_define_is_ignored(where: str, value: object) -> None:
    """config.md "Extensibility": runtimes MUST ignore unknown properties (runtime-tools' misc_props checks it);
    what the spec defines and runner-oci cannot do is refused by name (the tests above)."""
    doc = minimal()
    _set(doc, where, value)
    assert parse(doc) == parse(minimal())


def test_the_resources_runc_takes_are_taken() -> None:
    c = parse(minimal(linux={"namespaces": [{"type": "mount"}],
                             "resources": {"memory": {"kernel": 1 << 20, "kernelTCP": 1 << 20, "swappiness": 10,
                                                      "disableOOMKiller": True},
                                           "cpu": {"cpus": "0", "mems": "0"}}}))
    assert (c.limits.kernel, c.limits.kernel_tcp, c.limits.swappiness, c.limits.oom_kill_disable,
            c.limits.cpuset_cpus, c.limits.cpuset_mems) == (1 << 20, 1 << 20, 10, True, "0", "0")



@pytest.mark.parametrize("mount", [None, "/proc/1/ns/mnt"])
def test_no_mount_namespace_of_its_own_is_refused(mount: str | None) -> None:
    """Without one, the init's mounts, pivot_root and masked paths would act in the host's (or a joined
    container's) mount namespace."""
    doc = minimal()
    doc["linux"]["namespaces"] = [n for n in doc["linux"]["namespaces"] if n["type"] != "mount"]
    if mount:
        doc["linux"]["namespaces"].append({"type": "mount", "path": mount})
    assert "mount namespace" in refusal(doc)


@pytest.mark.parametrize("key", ["hostname", "domainname"])
@pytest.mark.parametrize("uts", [None, "/proc/1/ns/uts"])
def test_a_hostname_without_a_uts_namespace_of_its_own_is_refused(key: str, uts: str | None) -> None:
    """runc: "unable to set hostname without a private UTS namespace"; runner-oci took it and set nothing."""
    doc = minimal(**{key: "name"})
    doc["linux"]["namespaces"] = [n for n in doc["linux"]["namespaces"] if n["type"] != "uts"]
    if uts:
        doc["linux"]["namespaces"].append({"type": "uts", "path": uts})
    assert f"unable to set {key} without a private UTS namespace" in refusal(doc)
    doc[key] = ""
    parse(doc)  # the zero value asks for nothing
