"""The on-disk whiteout format of our diff directories, as one explicit type.

A tar layer says "delete NAME from lower layers" with an empty file ``.wh.NAME`` and "hide everything the lower
layers have in this directory" with ``.wh..wh..opq`` (image-spec layer.md). A diff directory that overlayfs uses as
a lower dir must say the same in overlayfs' own terms (kernel Documentation/filesystems/overlayfs.rst): a
character device 0/0 named NAME, and the xattr ``trusted.overlay.opaque=y`` on the directory. Overlayfs also
reserves ``trusted.overlay.*`` for itself; a layer's own xattr of that name is stored escaped as
``trusted.overlay.overlay.*`` and shown unescaped in the merged view (Linux >= 6.7).

Creating 0/0 devices and ``trusted.*`` xattrs needs CAP_MKNOD and CAP_SYS_ADMIN: that is a root store's format
(:data:`OVERLAY`). Without root (issue 20) the tools run in a user namespace, where a 0/0 device can still be
made (Linux >= 5.8) but ``trusted.*`` cannot: a user's store marks opaque dirs with ``user.overlay.opaque`` and is
mounted with overlayfs' ``userxattr`` option (Linux >= 5.11), which reads ``user.overlay.*`` instead
(:data:`USER_OVERLAY`). What a user namespace cannot make at all, device nodes and ``trusted.*`` xattrs of a
layer's own, that format leaves out (:attr:`OverlayFormat.privileged`).
"""

from __future__ import annotations

import os
import stat
from typing import NamedTuple

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
AUFS_META_PREFIX = ".wh..wh."  # AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): skipped, as moby does


class OverlayFormat(NamedTuple):
    """Kernel overlayfs whiteouts with xattrs in the ``trusted.`` namespace (``user.`` for userxattr mounts). (A
    NamedTuple, not a dataclass: every command imports this, and a frozen dataclass costs a millisecond to make.)"""

    xattr_namespace: str = "trusted"

    @property
    def privileged(self) -> bool:
        """Made by root: device nodes and ``trusted.*`` xattrs of a layer can be made."""
        return self.xattr_namespace == "trusted"

    @property
    def mount_options(self) -> tuple[str, ...]:
        """What overlayfs must be told to read this format."""
        return () if self.privileged else ("userxattr",)

    @property
    def overlay_prefix(self) -> str:
        return f"{self.xattr_namespace}.overlay."

    @property
    def opaque_xattr(self) -> str:
        return f"{self.overlay_prefix}opaque"

    def make_whiteout(self, dir_fd: int, name: str, uid: int, gid: int) -> None:
        os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=dir_fd)
        if uid or gid:
            os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)

    def make_opaque(self, dir_fd: int) -> None:
        os.setxattr(dir_fd, self.opaque_xattr, b"y")

    @staticmethod
    def is_whiteout(st: os.stat_result) -> bool:
        return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)

    def is_opaque(self, dir_fd: int) -> bool:
        try:
            return os.getxattr(dir_fd, self.opaque_xattr) == b"y"
        except OSError:
            return False

    def escape_xattr(self, name: str) -> str:
        """A layer's own ``trusted.overlay.X`` must not be read by overlayfs as its own metadata."""
        if name.startswith(self.overlay_prefix):
            return self.overlay_prefix + "overlay." + name[len(self.overlay_prefix):]
        return name

    def is_overlay_metadata(self, name: str) -> bool:
        """True for overlayfs' own xattrs (opaque, origin, redirect ...), false for escaped layer xattrs."""
        return name.startswith(self.overlay_prefix) and not name.startswith(self.overlay_prefix + "overlay.")


OVERLAY = OverlayFormat()
USER_OVERLAY = OverlayFormat("user")
