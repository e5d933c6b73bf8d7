"""A caller's bundle made the container's root, in the init's new mount namespace: ``root.path`` bound onto itself,
``config.json``'s mounts in their order, /dev's nodes, pivot_root; after it the sysctls, masked and read-only paths
and a read-only root. runc's order (libcontainer/rootfs_linux.go), with the runner's primitives for each step:

* every destination is resolved once, inside the root (:func:`runner.isolation.rootfs.resolve_target`: openat2
  RESOLVE_IN_ROOT, missing parts made), and mounted through that fd, so a symlink in the image (or one a
  container sharing a volume swaps in) can never send a mount onto the host (CVE-2021-30465's class);
* a bind is a detached copy of its source (open_tree, recursive for ``rbind``), given its flags before it is
  attached anywhere (the ``r*`` options to every submount, mount_setattr), then moved onto that fd: no second
  lookup of the destination, and no window in which it is writable when it should not be;
* a ``cgroup`` mount is the container's own groups (:func:`runner.isolation.rootfs.mount_cgroups`, as the
  runner's containers see them);
* /dev's nodes are made by mknod in the container's /dev and each bound onto itself, then /dev turns nodev unless
  the device list allows every device: the second wall behind the devices cgroup, as in the runner's containers.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from runner import linux
from runner.isolation import cgroups, rootfs
from runner.oci.config import Config, ConfigError, Device, unsupported
from runner.spec import Mount
from shared.layer.safepath import SafeRoot, split

MS_SYNCHRONOUS, MS_MANDLOCK, MS_DIRSYNC, MS_NOATIME, MS_NODIRATIME = 16, 64, 128, 1024, 2048
MS_SILENT, MS_UNBINDABLE, MS_SHARED, MS_RELATIME, MS_LAZYTIME = 32768, 1 << 17, 1 << 20, 1 << 21, 1 << 25
ATIME = 0x70  # MOUNT_ATTR__ATIME: noatime, strictatime and relatime (0) are one field of three values
# option -> (flags set, flags cleared): runc's mountOptions
FLAGS = {
    "ro": (linux.MS_RDONLY, 0), "rw": (0, linux.MS_RDONLY), "nosuid": (linux.MS_NOSUID, 0),
    "suid": (0, linux.MS_NOSUID), "nodev": (linux.MS_NODEV, 0), "dev": (0, linux.MS_NODEV),
    "noexec": (linux.MS_NOEXEC, 0), "exec": (0, linux.MS_NOEXEC), "sync": (MS_SYNCHRONOUS, 0),
    "async": (0, MS_SYNCHRONOUS), "dirsync": (MS_DIRSYNC, 0), "mand": (MS_MANDLOCK, 0), "nomand": (0, MS_MANDLOCK),
    "atime": (0, MS_NOATIME), "noatime": (MS_NOATIME, 0), "diratime": (0, MS_NODIRATIME),
    "nodiratime": (MS_NODIRATIME, 0), "relatime": (MS_RELATIME, 0), "norelatime": (0, MS_RELATIME),
    "strictatime": (linux.MS_STRICTATIME, 0), "nostrictatime": (0, linux.MS_STRICTATIME),
    "lazytime": (MS_LAZYTIME, 0), "nolazytime": (0, MS_LAZYTIME), "silent": (MS_SILENT, 0), "loud": (0, MS_SILENT),
    "bind": (linux.MS_BIND, 0), "rbind": (linux.MS_BIND | linux.MS_REC, 0), "remount": (0, 0),
}
PROPAGATION = {"private": linux.MS_PRIVATE, "rprivate": linux.MS_PRIVATE | linux.MS_REC,
               "slave": linux.MS_SLAVE, "rslave": linux.MS_SLAVE | linux.MS_REC,
               "shared": MS_SHARED, "rshared": MS_SHARED | linux.MS_REC,
               "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | linux.MS_REC}
# the recursive options (mount_setattr on the whole tree): option -> (attributes set, cleared)
RECURSIVE = {"rro": (linux.MOUNT_ATTR_RDONLY, 0), "rrw": (0, linux.MOUNT_ATTR_RDONLY),
             "rnosuid": (linux.MOUNT_ATTR_NOSUID, 0), "rsuid": (0, linux.MOUNT_ATTR_NOSUID),
             "rnodev": (linux.MOUNT_ATTR_NODEV, 0), "rdev": (0, linux.MOUNT_ATTR_NODEV),
             "rnoexec": (linux.MOUNT_ATTR_NOEXEC, 0), "rexec": (0, linux.MOUNT_ATTR_NOEXEC),
             "rnoatime": (linux.MOUNT_ATTR_NOATIME, 0), "rstrictatime": (linux.MOUNT_ATTR_STRICTATIME, 0),
             "rrelatime": (0, ATIME), "ratime": (0, linux.MOUNT_ATTR_NOATIME),
             "rnodiratime": (linux.MOUNT_ATTR_NODIRATIME, 0)}
REFUSED = ("tmpcopyup", "idmap", "ridmap")
ATTRS = {linux.MS_RDONLY: linux.MOUNT_ATTR_RDONLY, linux.MS_NOSUID: linux.MOUNT_ATTR_NOSUID,
         linux.MS_NODEV: linux.MOUNT_ATTR_NODEV, linux.MS_NOEXEC: linux.MOUNT_ATTR_NOEXEC,
         MS_NOATIME: linux.MOUNT_ATTR_NOATIME, linux.MS_STRICTATIME: linux.MOUNT_ATTR_STRICTATIME,
         MS_NODIRATIME: linux.MOUNT_ATTR_NODIRATIME}
DEFAULT_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9),
                   ("tty", 5, 0))
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2"}


def atime(on: int, off: int) -> tuple[int, int]:
    """mount_setattr takes an atime mode only with the whole field cleared (else EINVAL): relatime is none of the
    bits set, noatime or strictatime one of them."""
    return (on, off | ATIME) if (on | off) & ATIME else (on, off)


class Options:
    """One mount's options, sorted into what mount(2) takes and what follows it."""

    def __init__(self, options: Sequence[str], where: str) -> None:
        self.flags = self.cleared = self.propagation = self.rec_set = self.rec_clr = 0
        data = []
        for opt in options:
            if opt in FLAGS:
                self.flags |= FLAGS[opt][0]
                self.cleared |= FLAGS[opt][1]
                self.flags &= ~FLAGS[opt][1]
            elif opt in PROPAGATION:
                self.propagation = PROPAGATION[opt]
            elif opt in RECURSIVE:
                self.rec_set |= RECURSIVE[opt][0]
                self.rec_clr |= RECURSIVE[opt][1]
            elif opt in REFUSED:
                raise unsupported(f"{where}.options {opt!r}")
            else:
                data.append(opt)
        self.data = ",".join(data)

    @property
    def bind(self) -> bool:
        return bool(self.flags & linux.MS_BIND)

    def attributes(self) -> tuple[int, int]:
        """The flags as mount_setattr's attributes (for a bind, which takes them after the fact)."""
        on = sum(a for f, a in ATTRS.items() if self.flags & f)
        off = sum(a for f, a in ATTRS.items() if self.cleared & f)
        return atime(on, off | (ATIME if self.flags & MS_RELATIME else 0))


def prepare_root(config: Config) -> None:
    """Before the mounts: the host's mounts stay out of the container's propagation, and the root is a mount of
    its own (pivot_root needs one), bound recursively as runc does."""
    slave = config.rootfs_propagation in ("", "slave", "rslave", "shared", "rshared")
    linux.mount(None, "/", None, linux.MS_REC | (linux.MS_SLAVE if slave else linux.MS_PRIVATE))
    linux.mount(str(config.root), str(config.root), None, linux.MS_BIND | linux.MS_REC)


def mount_all(config: Config, group: cgroups.Cgroup, terminal: bool) -> None:
    """config.json's mounts in order, then /dev's nodes (module doc)."""
    userns = config.namespace("user") is not None  # a user namespace may mount no v1 cgroup and make no node
    with SafeRoot(str(config.root)) as root:
        dev_bound = False
        for i, m in enumerate(config.mounts):
            where = f"mounts[{i}]"
            opts = Options(m.options, where)
            if m.type == "bind" or opts.bind:
                _bind(root, m, opts, config.bundle)
                dev_bound = dev_bound or m.destination.rstrip("/") == "/dev"
            elif m.type in ("cgroup", "cgroup2") and not cgroups.is_v2():
                rootfs.mount_cgroups(root, group, read_only=bool(opts.flags & linux.MS_RDONLY), own_userns=userns)
                if config.namespace("cgroup") is None and not userns:
                    _own_groups(root, group)
            else:
                _mount(root, m, opts)
        if not dev_bound:
            make_devices(root, config.devices, terminal, harden=_limits_devices(config), borrowed=userns)


def _own_groups(root: SafeRoot, group: cgroups.Cgroup) -> None:
    """Without a cgroup namespace (Docker 20.10's default on v1) a hierarchy mounted at /sys/fs/cgroup/NAME is the
    host's whole tree: as runc does, each NAME shows the container's own group instead (bound over it, read-only),
    so its limits are the ones at the top and no other group of the host's is in sight."""
    mounts, paths = cgroups.controller_mounts(), cgroups.v1_paths()  # we are in the group already (create put us)
    for h in group.hierarchies():
        controller = next((c for c in (h.options or "").split(",") if c in paths and c in mounts), None)
        if controller is None:
            continue
        own, name = mounts[controller] / paths[controller].lstrip("/"), h.name
        tree = linux.clone_tree(linux.AT_FDCWD, str(own), recursive=False)
        try:
            linux.set_tree_attributes(tree, linux.MOUNT_ATTR_RDONLY | linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV
                                      | linux.MOUNT_ATTR_NOEXEC, recursive=False)
            rootfs.attach(root, tree, f"/sys/fs/cgroup/{name}")
        finally:
            os.close(tree)


def _source(m: Mount, bundle: Path) -> str:
    return m.source if m.source.startswith("/") else str(bundle / m.source)


def _bind(root: SafeRoot, m: Mount, opts: Options, bundle: Path) -> None:
    source = _source(m, bundle)
    try:
        tree = linux.clone_tree(linux.AT_FDCWD, source, recursive=bool(opts.flags & linux.MS_REC))
    except OSError as e:
        raise ConfigError(f"cannot bind {source} at {m.destination}: {e.strerror}") from None
    try:
        on, off = opts.attributes()
        if on or off:
            linux.set_tree_attributes(tree, on, recursive=False, attr_clr=off)
        if on & linux.MOUNT_ATTR_RDONLY and opts.flags & linux.MS_REC:  # rbind,ro: read-only all the way down, as
            linux.set_tree_attributes(tree, linux.MOUNT_ATTR_RDONLY)  # the runner's :ro (a submount is no way out)
        if opts.rec_set or opts.rec_clr:
            rec_on, rec_off = atime(opts.rec_set, opts.rec_clr)
            linux.set_tree_attributes(tree, rec_on, attr_clr=rec_off)
        if opts.propagation:  # on the detached tree: after the move, the target's fd names what it covers
            linux.set_tree_attributes(tree, 0, propagation=opts.propagation & ~linux.MS_REC,
                                      recursive=bool(opts.propagation & linux.MS_REC))
        rootfs.attach(root, tree, m.destination)
    finally:
        os.close(tree)


def _mount(root: SafeRoot, m: Mount, opts: Options) -> None:
    fd = rootfs.resolve_target(root, m.destination, want_dir=True)
    try:
        linux.mount(m.source or m.type, f"/proc/self/fd/{fd}", m.type, opts.flags, opts.data or None)
        if opts.propagation or opts.rec_set or opts.rec_clr:
            _after(root, m.destination, opts)
    except OSError as e:
        raise ConfigError(f"cannot mount {m.type} at {m.destination}: {e.strerror}") from None
    finally:
        os.close(fd)


def _after(root: SafeRoot, destination: str, opts: Options) -> None:
    """Propagation and the recursive options of a mount just made: its fd is taken anew, by name in its parent
    (the target's fd names the directory the mount now covers), never following a symlink."""
    parts = split(destination)
    parent = rootfs.resolve_target(root, "/" + "/".join(parts[:-1]), want_dir=True)
    try:
        mnt = os.open(parts[-1], os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=parent)
    finally:
        os.close(parent)
    try:
        on, off = atime(opts.rec_set, opts.rec_clr)
        linux.set_tree_attributes(mnt, on, propagation=opts.propagation & ~linux.MS_REC,
                                  recursive=bool(opts.propagation & linux.MS_REC) or bool(on or off), attr_clr=off)
    finally:
        os.close(mnt)


def _limits_devices(config: Config) -> bool:
    """Whether the device list allows fewer than every device (then /dev is made nodev behind its nodes)."""
    rules = config.device_rules
    return not any(r.type == "a" and r.allow and r.access == "rwm" for r in rules[-1:])


def make_devices(root: SafeRoot, devices: Sequence[Device], terminal: bool, harden: bool, borrowed: bool) -> None:
    """runc's default nodes and ``linux.devices`` in the container's /dev (mknod: the container's own inodes; in a
    user namespace, which may make none, the host's node of the same path bound, as runc's rootless), its links,
    /dev/ptmx to the devpts instance, /dev/console for a terminal; each node bound onto itself and /dev remounted
    nodev when ``harden`` (module doc)."""
    wanted = [Device(f"/dev/{n}", "c", major, minor, 0o666, 0, 0) for n, major, minor in DEFAULT_DEVICES]
    wanted += [d for d in devices if d.path not in {w.path for w in wanted}]
    made = [_make_node(root, device, borrowed) for device in wanted]
    dev = root.open_dir(["dev"])
    try:
        for name, target in {**DEV_LINKS, "ptmx": "pts/ptmx"}.items():
            try:
                os.unlink(name, dir_fd=dev)
            except (FileNotFoundError, IsADirectoryError):
                pass
            except OSError:
                continue
            os.symlink(target, name, dir_fd=dev)
        if terminal:
            os.close(os.open("console", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600, dir_fd=dev))
        dev_is_mount = os.stat(".", dir_fd=dev).st_dev != os.fstat(root.fd).st_dev
    finally:
        os.close(dev)
    if harden and dev_is_mount:
        for rel in made:
            fd = rootfs.resolve_target(root, "/" + rel, want_dir=False)
            try:
                linux.mount(f"/proc/self/fd/{fd}", f"/proc/self/fd/{fd}", None, linux.MS_BIND)
            finally:
                os.close(fd)
        fd = rootfs.resolve_target(root, "/dev", want_dir=True)
        try:
            linux.mount(None, f"/proc/self/fd/{fd}", None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_NOSUID |
                        linux.MS_NODEV | _kept_flags(fd))
        finally:
            os.close(fd)


def _make_node(root: SafeRoot, device: Device, borrowed: bool) -> str:
    """One node, at its path resolved inside the root; its path, relative to the root."""
    rel = device.path.removeprefix("/")
    parts = split(rel)
    parent = rootfs.resolve_target(root, "/" + "/".join(parts[:-1]), want_dir=True)
    try:
        dir_fd = os.open(f"/proc/self/fd/{parent}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    finally:
        os.close(parent)
    try:
        kind = {"c": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[device.type]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(parts[-1], dir_fd=dir_fd)
        if borrowed:
            _borrow(dir_fd, parts[-1], device, kind)
        else:
            os.mknod(parts[-1], kind | device.file_mode, os.makedev(device.major, device.minor), dir_fd=dir_fd)
            os.chmod(parts[-1], device.file_mode, dir_fd=dir_fd, follow_symlinks=False)
            os.chown(parts[-1], device.uid, device.gid, dir_fd=dir_fd, follow_symlinks=False)
    finally:
        os.close(dir_fd)
    return rel


def _borrow(dir_fd: int, name: str, device: Device, kind: int) -> None:
    """The host's node at the device's path bound onto a placeholder, once it is the node config.json names."""
    try:
        st = os.stat(device.path)
    except OSError as e:
        raise ConfigError(f"device {device.path}: {e.strerror} on the host, whose node a user namespace borrows") \
            from None
    if stat.S_IFMT(st.st_mode) != kind or st.st_rdev != os.makedev(device.major, device.minor):
        raise ConfigError(f"device {device.path}: the host's node is not {device.type} {device.major}:{device.minor}")
    os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dir_fd))
    target = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        linux.mount(device.path, f"/proc/self/fd/{target}", None, linux.MS_BIND)
    finally:
        os.close(target)


def _kept_flags(fd: int) -> int:
    """The flags a remount must repeat to keep them (statvfs's, in mount(2)'s bits)."""
    st = os.statvfs(f"/proc/self/fd/{fd}")
    keep = {os.ST_RDONLY: linux.MS_RDONLY, os.ST_NOEXEC: linux.MS_NOEXEC, os.ST_NOATIME: MS_NOATIME,
            os.ST_NODIRATIME: MS_NODIRATIME, os.ST_RELATIME: MS_RELATIME, os.ST_NOSUID: linux.MS_NOSUID,
            os.ST_NODEV: linux.MS_NODEV}
    return sum(ms for st_flag, ms in keep.items() if st.f_flag & st_flag)


def pivot(config: Config, no_pivot: bool) -> None:
    """Into the root: pivot_root (or, with --no-pivot, a move onto / and chroot, for a root on ramfs), then the
    root's propagation as config.json asks."""
    os.chdir(config.root)
    rootfs.forbid_imports()
    if no_pivot:
        linux.mount(".", "/", None, linux.MS_MOVE)
        os.chroot(".")
    else:
        linux.pivot_root(".", ".")
        linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")
    if config.rootfs_propagation:
        linux.mount(None, "/", None, PROPAGATION[config.rootfs_propagation])


def finish(config: Config) -> None:
    """After pivot_root, as runc: sysctls (before /proc/sys turns read-only), masked and read-only paths, the
    read-only root."""
    for key, value in config.sysctl.items():
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(value)
    with SafeRoot("/") as root:
        rootfs.mask_paths(root, config.masked_paths, config.readonly_paths)
    if config.root_readonly:
        fd = os.open("/", os.O_PATH | os.O_CLOEXEC)
        try:
            flags = _kept_flags(fd)
        finally:
            os.close(fd)
        linux.mount(None, "/", None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | flags)
