"""A container's root filesystem: the -init layer, one overlay mount, the special filesystems, pivot_root.

lowerdir = -init, then the image layers top first; upperdir = the rw layer. The -init layer holds only
placeholders (moby daemon/initlayer): the container's own hosts/hostname/resolv.conf are bind-mounted over them, so
neither the placeholders nor those files' contents ever reach the rw layer, and a commit of upper/ is exactly
what the container changed.

Mounts are made inside the container's own mount namespace (made private first), so they vanish with it: no
mount is ever visible on the host, and none can leak when the runner is killed.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from runner import linux
from runner.isolation import cgroups, idmap
from runner.spec import NETWORK_FILES, TINI, Device, Spec, Volume
from shared.errors import Kind, StrataError
from shared.layer import safepath
from shared.layer.safepath import SafeRoot, split
from shared.layer.unpack import DiffWriter, Lowers
from shared.store.layout import store_overlay
from shared.userns import rootless

INIT_DIRS = ("proc", "sys", "dev", "dev/pts", "dev/shm")
INIT_FILES = (*(f"etc/{n}" for n in NETWORK_FILES), "dev/console")
INIT_SYMLINKS = {"etc/mtab": "/proc/mounts"}
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx", "core": "/proc/kcore"}
DEFAULT_RESOLV = "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"


def build_init_layer(init_dir: Path, lowers: Sequence[Path]) -> None:
    """Placeholders only. Each parent directory takes the image's own metadata (see DiffWriter)."""
    init_dir.mkdir(mode=0o755)
    fmt = store_overlay()
    low = Lowers(lowers, fmt)
    writer = DiffWriter(init_dir, low, fmt)
    try:
        writer.init_root()
        for path in INIT_DIRS:
            writer.parent(split(path))  # created with the lower's metadata, or 0755 root
        for path in INIT_FILES:
            parts = split(path)
            fd = writer.parent(parts[:-1])
            os.close(os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                             dir_fd=fd))
        for path, target in INIT_SYMLINKS.items():
            parts = split(path)
            os.symlink(target, parts[-1], dir_fd=writer.parent(parts[:-1]))
        writer.finish()
    finally:
        writer.close()
        low.close()


def network_files(hostname: str) -> dict[str, str]:
    """The container's own copies, bind-mounted over the placeholders. Only loopback exists in its netns, so
    hosts names just that; resolv.conf is the host's minus loopback resolvers, which cannot be reached."""
    hosts = (f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
             f"fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
             f"127.0.1.1\t{hostname}\n")
    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        lines = []
    kept = [ln for ln in lines if not (ln.split()[:1] == ["nameserver"] and _loopback(ln.split()[1:2]))]
    resolv = "\n".join(kept) + "\n" if any(ln.startswith("nameserver") for ln in kept) else DEFAULT_RESOLV
    return {"hosts": hosts, "hostname": hostname + "\n", "resolv.conf": resolv}


def _loopback(addr: list[str]) -> bool:
    return bool(addr) and (addr[0].startswith("127.") or addr[0] == "::1")


def prepare(spec: Spec, lowers: Sequence[Path]) -> None:
    """Everything on disk the mount needs, in the container's directory (``spec.bundle``). ``lowers`` are the
    image's diff dirs, top first."""
    d = Path(spec.bundle)
    build_init_layer(d / "init", lowers)
    for sub in ("upper", "work", "merged", "l"):
        (d / sub).mkdir(mode=0o755)
    if spec.id_block is not None:
        os.chown(d / "upper", spec.id_block.uid_base, spec.id_block.gid_base)  # the rw layer's root is its root's
        os.chmod(d, 0o711)  # PID 1, root of the container's namespace only, reaches merged/ and the network files
    # Short relative names keep the mount data far under a page even with 128 layers (moby overlay2's "l/").
    for i, lower in enumerate(lowers):
        os.symlink(os.path.relpath(lower, d / "l"), d / "l" / str(i))
    for name, text in network_files(spec.hostname).items():
        (d / name).write_text(text)


def _open_target(root: SafeRoot, path: str) -> int:
    """An O_PATH fd of ``path`` in the container's tree, no symlink followed: the mount goes through
    /proc/self/fd, so an image symlink cannot redirect a mount onto the host (runc's approach)."""
    parts = split(path)
    parent = root.open_dir(parts[:-1])
    try:
        return os.open(parts[-1], os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    finally:
        os.close(parent)


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _mount_at(root: SafeRoot, path: str, source: str | None, fstype: str | None, flags: int,
              data: str | None = None) -> None:
    fd = _open_target(root, path)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise StrataError(f"refusing to mount on /{path}: it is a symlink in the image", Kind.SYSTEM)
        linux.mount(source, _fd_path(fd), fstype, flags, data)
    finally:
        os.close(fd)


def resolve_target(root: SafeRoot, path: str, want_dir: bool) -> int:
    """An O_PATH fd for a user's mount destination, resolved *inside* the root (openat2 RESOLVE_IN_ROOT: an image
    symlink /var/run -> /run is followed within the container, never out of it), created if missing (as a
    directory, or an empty file for a file source), the way Docker resolves volume targets."""
    parts = split(path)
    resolve = safepath.RESOLVE_IN_ROOT | safepath.RESOLVE_NO_MAGICLINKS
    for found in range(len(parts), -1, -1):
        try:
            fd = safepath.openat2(root.fd, "/".join(parts[:found]) or ".", os.O_PATH, resolve)
            break
        except FileNotFoundError:
            continue
    for i in range(found, len(parts)):
        try:
            dir_fd = os.open(_fd_path(fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except NotADirectoryError:
            os.close(fd)
            raise StrataError(f"cannot mount on {path}: /{'/'.join(parts[:i])} is not a directory",
                              Kind.USAGE) from None
        os.close(fd)
        try:
            if i == len(parts) - 1 and not want_dir:
                os.close(os.open(parts[i], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 0o644, dir_fd=dir_fd))
            else:
                os.mkdir(parts[i], 0o755, dir_fd=dir_fd)
            fd = os.open(parts[i], os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
    return fd


def mount_and_pivot(spec: Spec) -> None:
    """In the child, after unshare(CLONE_NEWNS) and CLONE_NEWCGROUP: build the tree at merged/ of the container's
    directory (``spec.bundle``) from its -init layer and image layers, make it the root.

    Unless --privileged, every writable mount but a ``--tmpfs ...:dev`` is nodev, volumes in all their submounts:
    CAP_MKNOD stays (Docker's default), and what refuses the open of a node the container makes or finds is the
    devices cgroup (:mod:`runner.isolation.devcgroup`), as under Docker; nodev is a second wall. The allowed devices are
    nodes of the container's own /dev (each bound onto itself before /dev turns nodev), never the host's: a
    chmod, chown, utime or setxattr inside changes nothing on the host.
    """
    nodev = 0 if spec.privileged else linux.MS_NODEV
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    if spec.id_block is None:
        os.chdir(spec.bundle)
        mount_overlay(spec)
    else:
        # the overlay was mounted before the user namespace was entered (mount_overlay, idmapped), and the current
        # directory is the container's, which the namespace's root may not reach by its path. Copied into this
        # namespace, that mount is locked, which pivot_root refuses: bound onto itself, as runc does
        linux.mount("merged", "merged", None, linux.MS_BIND | linux.MS_REC)
    in_userns = rootless() or spec.id_block is not None
    with SafeRoot("merged") as root:
        mount_network_files(root, Path("."))
        nosuid_nodev_noexec = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
        _mount_at(root, "proc", "proc", "proc", nosuid_nodev_noexec)
        kind = spec.network.mode.kind
        if in_userns and (kind == "host" or (kind == "container" and spec.id_block is not None)):
            # sysfs may be mounted only by a user namespace that owns the network namespace: in the host's (or
            # another container's, whose user namespace is not ours), the host's /sys is bound instead,
            # read-only in every submount, as runc's rootless does
            mount_volume(root, Volume("/sys", "/sys", read_only=True), privileged=False)
        else:
            _mount_at(root, "sys", "sysfs", "sysfs",
                      nosuid_nodev_noexec | (0 if spec.privileged else linux.MS_RDONLY))
        mount_cgroups(root, cgroups.for_container(spec.id), read_only=not spec.privileged,
                      own_userns=spec.id_block is not None)
        _populate_dev(root, spec.devices, spec.privileged, init=spec.init, console=spec.terminal,
                      borrowed=in_userns)
        mask_paths(root, spec.masked_paths, spec.readonly_paths)
        for volume in spec.volumes:
            mount_volume(root, volume, spec.privileged)
        for t in spec.tmpfs:
            if not (t.flags & linux.MS_NODEV or spec.privileged or cgroups.can_limit_devices()):
                raise StrataError(f"--tmpfs {t.target} with dev needs the devices cgroup, which is not mounted here",
                                  Kind.USAGE)
            fd = resolve_target(root, t.target, want_dir=True)
            try:
                linux.mount("tmpfs", _fd_path(fd), "tmpfs", t.flags, t.data or None)
            finally:
                os.close(fd)
        os.close(resolve_target(root, spec.cwd, want_dir=True))  # as Docker, even on --read-only
    if spec.read_only:
        linux.mount(None, "merged", None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | nodev)
    os.chdir("merged")
    forbid_imports()
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)  # the old root, stacked under the new one by pivot_root(".", ".")
    os.chdir("/")


def mount_overlay(spec: Spec, userns: int | None = None) -> None:
    """The container's overlay at merged/, in the current directory (the container's). With USERNS (the
    ``--userns=auto`` path, before the namespace is entered), its lower layers are idmapped binds of the -init
    layer and the image's (:mod:`runner.isolation.idmap`)."""
    nodev = 0 if spec.privileged else linux.MS_NODEV
    if userns is not None:
        idmap.mount_lowers(_lowers(spec), userns)
    linux.mount("overlay", "merged", "overlay", nodev, overlay_data(spec))


def _bind_host_device(devroot: SafeRoot, device: Device, name: str) -> None:
    """Without root: the host's node at the device's path, bound onto the placeholder NAME, after checking it
    is the node the spec names (a host path is not the container's, but its type and number must agree). Its
    owner and mode stay the host's, which the container's root, mapped to a user, cannot change."""
    try:
        st = os.stat(device.path)
    except OSError as e:
        raise StrataError(f"device {device.path}: {e.strerror} on the host, whose node a container without root "
                          "borrows", Kind.SYSTEM) from None
    kind = stat.S_IFCHR if device.type == "c" else stat.S_IFBLK
    if stat.S_IFMT(st.st_mode) != kind or st.st_rdev != os.makedev(device.major, device.minor):
        raise StrataError(f"device {device.path}: the host's node is not {device.type} "
                          f"{device.major}:{device.minor}", Kind.SYSTEM)
    _mount_at(devroot, name, device.path, None, linux.MS_BIND)


def gid_mapped(gid: int) -> bool:
    """Is ``gid`` mapped in this process's user namespace (always, outside one)? Also what drops devpts' gid=5
    from a runtime's config.json for a user without ranges."""
    with open("/proc/self/gid_map") as f:
        return any(int(inside) <= gid < int(inside) + int(count)
                   for inside, _, count in (line.split() for line in f if line.strip()))


def overlay_data(spec: Spec) -> str:
    """The overlay mount's data, relative to the container's directory (short names keep it far under a page even
    with 128 layers, as moby overlay2's "l/"). Redirects neither made nor followed (``nofollow``: ``off`` means
    ``follow`` on kernels built with redirect_always_follow) and metacopy off, whatever the kernel's defaults:
    the rw layer then holds whole files and real directories that commit can pack as they are, and untrusted
    lowers cannot use the redirect xattr attack. A user's store adds ``userxattr`` (its whiteouts' format), which
    takes no other redirect mode."""
    lower = ":".join(_lowers(spec) if spec.id_block is None else idmap.lower_dirs(len(spec.chain_ids)))
    return ",".join([f"lowerdir={lower}", "upperdir=upper", "workdir=work", "redirect_dir=nofollow", "metacopy=off",
                     *store_overlay().mount_options])


def _lowers(spec: Spec) -> list[str]:
    """The -init layer and the image's layers, top first, as the container's directory names them."""
    return ["init", *(f"l/{i}" for i in range(len(spec.chain_ids)))]


def mount_network_files(root: SafeRoot, bundle: Path) -> None:
    """The container's hosts, hostname and resolv.conf (in its directory, ``bundle``) over the -init layer's
    placeholders, before any volume (a volume at or above /etc then covers them, as under runc). Also what binds
    them for a runtime."""
    for name in NETWORK_FILES:
        _mount_at(root, f"etc/{name}", str(bundle / name), None, linux.MS_BIND)


class _NoImports:
    """A meta path finder that refuses every import: see :func:`forbid_imports`."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        raise ImportError(f"no module may be imported inside the container ({name}): it would come from the image")


def forbid_imports() -> None:
    """Call before pivot_root or setns into a container's mount namespace. From there on every path names the
    image's files, so a lazy import (or a codec looked up for the first time) would load the image's code into a
    process that is still root with every capability; it fails instead. Libraries are loaded before, too."""
    sys.meta_path.insert(0, _NoImports())



def mount_cgroups(root: SafeRoot, group: cgroups.Cgroup, read_only: bool, own_userns: bool = False) -> None:
    """The container's own cgroups at /sys/fs/cgroup, as Docker mounts them: v2's root, or on v1 a tmpfs with one
    directory per hierarchy the container has a group in. We are in the cgroup namespace whose root is that
    group, so the limits at the top are the container's. In a user namespace of its own (--userns=auto) v1's
    hierarchies cannot be mounted (only cgroup2 may be, in a user namespace): the tmpfs stays empty there."""
    flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC | (linux.MS_RDONLY if read_only else 0)
    hierarchies = group.hierarchies()
    if own_userns and not (len(hierarchies) == 1 and hierarchies[0].fstype == "cgroup2"):
        hierarchies = []
    if len(hierarchies) == 1 and hierarchies[0].fstype == "cgroup2":
        _mount_at(root, "sys/fs/cgroup", "cgroup2", "cgroup2", flags)
        return
    _mount_at(root, "sys/fs/cgroup", "tmpfs", "tmpfs", flags & ~linux.MS_RDONLY, "mode=755,size=64k")
    top = root.open_dir(split("sys/fs/cgroup"))
    try:
        for h in hierarchies:
            os.mkdir(h.name, 0o755, dir_fd=top)
            for alias in h.aliases:
                os.symlink(h.name, alias, dir_fd=top)
    finally:
        os.close(top)
    for h in hierarchies:
        _mount_at(root, f"sys/fs/cgroup/{h.name}", "cgroup", h.fstype, flags, h.options)
    if read_only:
        _mount_at(root, "sys/fs/cgroup", None, None, linux.MS_REMOUNT | linux.MS_BIND | flags)


def mask_paths(root: SafeRoot, masked: Sequence[str], read_only: Sequence[str]) -> None:
    """The spec's maskedPaths (Docker's): the container's /dev/null over files, an empty read-only tmpfs over
    directories; its readonlyPaths: bound onto themselves read-only, submounts included."""
    if not masked and not read_only:
        return
    null = _open_target(root, "dev/null")
    try:
        for path in (p.lstrip("/") for p in masked):
            try:
                fd = _open_target(root, path)
            except (FileNotFoundError, StrataError):
                continue  # not on this kernel, or not a plain path: nothing to hide
            try:
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    linux.mount("tmpfs", _fd_path(fd), "tmpfs", linux.MS_RDONLY, "size=0")
                else:
                    linux.mount(_fd_path(null), _fd_path(fd), None, linux.MS_BIND)
            finally:
                os.close(fd)
    finally:
        os.close(null)
    for path in (p.lstrip("/") for p in read_only):
        try:
            fd = _open_target(root, path)
        except (FileNotFoundError, StrataError):
            continue
        try:  # a read-only copy of the tree, moved onto the very inode it came from (resolved once)
            tree = linux.clone_tree(fd)
            try:
                linux.set_tree_attributes(tree, linux.MOUNT_ATTR_RDONLY, propagation=linux.MS_PRIVATE)
                linux.move_tree(tree, fd)
            finally:
                os.close(tree)
        finally:
            os.close(fd)


def mount_volume(root: SafeRoot, volume: Volume, privileged: bool) -> None:
    """``-v``: a detached recursive copy of the source, made read-only (if ``:ro``), nodev and nosuid (unless
    --privileged) in every submount before it is attached anywhere, then moved onto the target resolved once,
    inside the root. A remount would reach the top mount only (a tmpfs or devtmpfs under the source stayed
    writable and dev-allowed), and a second lookup of the target could meet a symlink another container swapped
    in (CVE-2021-30465): neither happens here. The copy is private before it is attached, so nothing mounted
    under the source later reaches it. Also what binds volumes for a runtime
    (:func:`runner.executor.runtime.mount_rootfs`)."""
    source = Path(volume.source)
    if not source.exists():
        source.mkdir(parents=True)  # as Docker's -v does
    attrs = (linux.MOUNT_ATTR_RDONLY if volume.read_only else 0) | \
        (0 if privileged else linux.MOUNT_ATTR_NODEV | linux.MOUNT_ATTR_NOSUID)
    tree = linux.clone_tree(linux.AT_FDCWD, str(source))
    try:
        linux.set_tree_attributes(tree, attrs, propagation=linux.MS_PRIVATE)
        attach(root, tree, volume.target)
    finally:
        os.close(tree)


def attach(root: SafeRoot, tree: int, target: str) -> None:
    """A detached mount tree (:func:`runner.linux.clone_tree`, its flags already set) moved onto TARGET, resolved
    once inside the root and made if missing (a directory, or an empty file for a file's tree): how every bind of
    a host path lands in a container, ``-v`` here and runner-oci's binds (:mod:`runner.oci.mounts`)."""
    fd = resolve_target(root, target, want_dir=stat.S_ISDIR(os.fstat(tree).st_mode))
    try:
        linux.move_tree(tree, fd)
    finally:
        os.close(fd)


def _populate_dev(root: SafeRoot, devices: Sequence[Device], privileged: bool, init: bool, console: bool,
                  borrowed: bool) -> None:
    """/dev: a tmpfs of the container's own with the default devices made by mknod (so their inodes are its own),
    each bound onto itself; then, unless --privileged, /dev itself turns nodev, so a node the container makes
    there later cannot be opened, while the bound ones keep working."""
    dev_flags = linux.MS_NOSUID | linux.MS_STRICTATIME
    _mount_at(root, "dev", "tmpfs", "tmpfs", dev_flags, "mode=755,size=65536k")
    dev = root.open_dir(["dev"])
    # BORROWED: a user namespace may make no device node: the host's are bound, as runc's rootless mode does
    try:
        names = []
        for device in devices:  # linux.devices: each a node of its own, directly in /dev
            name = device.path.removeprefix("/dev/")
            kind = {"c": stat.S_IFCHR, "b": stat.S_IFBLK}.get(device.type)
            if kind is None or not name or "/" in name or name in DEV_LINKS or name in ("pts", "shm", "mqueue"):
                raise StrataError(f"device {device.path}: only character or block devices directly in /dev",
                                  Kind.SYSTEM)
            if borrowed:  # a placeholder the host's node is bound onto, below
                os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dev))
            else:
                os.mknod(name, kind | device.file_mode, os.makedev(device.major, device.minor), dir_fd=dev)
                os.chmod(name, device.file_mode, dir_fd=dev, follow_symlinks=False)  # mknod's mode is cut by umask
            names.append(name)
        for name, target in DEV_LINKS.items():
            os.symlink(target, name, dir_fd=dev)
        for name in ("pts", "shm", "mqueue"):
            os.mkdir(name, 0o755, dir_fd=dev)
        if init:
            os.close(os.open("init", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o755, dir_fd=dev))
        if console:  # the container's pty is bound here once opened (runtime-spec: /dev/console with a terminal)
            os.close(os.open("console", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dev))
        with SafeRoot.from_fd(dev) as devroot:
            if borrowed:
                for device, name in zip(devices, names, strict=True):
                    _bind_host_device(devroot, device, name)
            elif not privileged:
                for name in names:
                    fd = _open_target(devroot, name)
                    try:
                        linux.mount(_fd_path(fd), _fd_path(fd), None, linux.MS_BIND)
                    finally:
                        os.close(fd)
            if init:
                if not os.path.exists(TINI):
                    raise StrataError(f"--init needs {TINI} (Debian package tini)", Kind.SYSTEM)
                _mount_at(devroot, "init", TINI, None, linux.MS_BIND)
                _mount_at(devroot, "init", None, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY)
            tty_group = ",gid=5" if gid_mapped(5) else ""  # one id mapped (a user without ranges): no group 5
            _mount_at(devroot, "pts", "devpts", "devpts", linux.MS_NOSUID | linux.MS_NOEXEC,
                      "newinstance,ptmxmode=0666,mode=0620" + tty_group)
            _mount_at(devroot, "shm", "shm", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC,
                      "mode=1777,size=65536k")
            _mount_at(devroot, "mqueue", "mqueue", "mqueue", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    finally:
        os.close(dev)
    if not privileged:
        _mount_at(root, "dev", None, None, linux.MS_REMOUNT | linux.MS_BIND | dev_flags | linux.MS_NODEV)
