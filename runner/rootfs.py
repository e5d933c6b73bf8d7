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
from collections.abc import Sequence
from pathlib import Path

from runner import linux
from runner.container import Container
from shared.errors import Kind, StrataError
from shared.layer.safepath import SafeRoot, split
from shared.layer.unpack import DiffWriter, Lowers
from shared.layer.whiteout import OVERLAY

NETWORK_FILES = ("etc/hosts", "etc/hostname", "etc/resolv.conf")
INIT_DIRS = ("proc", "sys", "dev", "dev/pts", "dev/shm")
INIT_FILES = (*NETWORK_FILES, "dev/console")
INIT_SYMLINKS = {"etc/mtab": "/proc/mounts"}
# Docker's defaults for what the container sees in /dev (runtime-spec config-linux.md "Default Devices")
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx", "core": "/proc/kcore"}
DEFAULT_RESOLV = "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"


def build_init_layer(init_dir: Path, lowers: Sequence[Path]) -> None:
    """Placeholders only. Each parent directory takes the image's own metadata (see DiffWriter)."""
    init_dir.mkdir(mode=0o755)
    low = Lowers(lowers)
    writer = DiffWriter(init_dir, low, OVERLAY)
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


def prepare(container: Container, lowers: Sequence[Path]) -> None:
    """Everything on disk the mount needs. ``lowers`` are the image's diff dirs, top first."""
    d = container.dir
    build_init_layer(d / "init", lowers)
    for sub in ("upper", "work", "merged", "l"):
        (d / sub).mkdir(mode=0o755)
    # Short relative names keep the mount data far under a page even with 128 layers (moby overlay2's "l/").
    for i, lower in enumerate(lowers):
        os.symlink(os.path.relpath(lower, d / "l"), d / "l" / str(i))
    for name, text in network_files(container.config.hostname).items():
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


def _mount_at(root: SafeRoot, path: str, source: str | None, fstype: str | None, flags: int,
              data: str | None = None) -> None:
    fd = _open_target(root, path)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise StrataError(f"refusing to mount on /{path}: it is a symlink in the image", Kind.SYSTEM)
        linux.mount(source, f"/proc/self/fd/{fd}", fstype, flags, data)
    finally:
        os.close(fd)


def mount_and_pivot(container: Container, layer_count: int) -> None:
    """In the child, after unshare(CLONE_NEWNS): build the tree at merged/ and make it the root."""
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    os.chdir(container.dir)
    lower = ":".join(["init", *(f"l/{i}" for i in range(layer_count))])
    # redirect_dir and metacopy off, whatever the kernel's defaults: the rw layer then holds whole files and real
    # directories that commit can pack as they are, and untrusted lowers cannot use the redirect xattr attack.
    linux.mount("overlay", "merged", "overlay", 0,
                f"lowerdir={lower},upperdir=upper,workdir=work,redirect_dir=off,metacopy=off")
    with SafeRoot("merged") as root:
        for name in ("hosts", "hostname", "resolv.conf"):
            _mount_at(root, f"etc/{name}", str(container.path(name)), None, linux.MS_BIND)
        nosuid_nodev_noexec = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
        _mount_at(root, "proc", "proc", "proc", nosuid_nodev_noexec)
        _mount_at(root, "sys", "sysfs", "sysfs", nosuid_nodev_noexec | linux.MS_RDONLY)
        _mount_at(root, "dev", "tmpfs", "tmpfs", linux.MS_NOSUID | linux.MS_STRICTATIME, "mode=755,size=65536k")
        _populate_dev(root)
    os.chdir("merged")
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)  # the old root, stacked under the new one by pivot_root(".", ".")
    os.chdir("/")


def _populate_dev(root: SafeRoot) -> None:
    dev = root.open_dir(["dev"])
    try:
        for name, (major, minor) in DEVICES.items():
            os.mknod(name, stat.S_IFCHR | 0o666, os.makedev(major, minor), dir_fd=dev)
            os.chmod(name, 0o666, dir_fd=dev)  # mknod's mode is cut by the umask
        for name, target in DEV_LINKS.items():
            os.symlink(target, name, dir_fd=dev)
        for name in ("pts", "shm", "mqueue"):
            os.mkdir(name, 0o755, dir_fd=dev)
        with SafeRoot.from_fd(dev) as devroot:
            _mount_at(devroot, "pts", "devpts", "devpts", linux.MS_NOSUID | linux.MS_NOEXEC,
                      "newinstance,ptmxmode=0666,mode=0620,gid=5")
            _mount_at(devroot, "shm", "shm", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC,
                      "mode=1777,size=65536k")
            _mount_at(devroot, "mqueue", "mqueue", "mqueue", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    finally:
        os.close(dev)

