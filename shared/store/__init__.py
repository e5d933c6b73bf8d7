"""The store both tools share, one module per part of it.

``layout``: where everything lives under the root and :class:`~shared.store.layout.Store`, the handle on it
(blobs, references in index.json, unpacked layers, holds, locks, tmp/ and partial downloads). ``files``: how the
store writes and removes (tmp-then-rename, JSON records, flock(2), a tree removal that follows no symlink).
``images``: a reference read back as an image, verified. ``gc``: what nothing reaches goes (``rmi``).
``fsck``: the store checked against what it promises, and repaired. ``transfer``: the store as a source and a
sink of :mod:`shared.transfer`'s copy (pull, push, save, load, commit).
"""
