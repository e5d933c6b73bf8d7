"""Layers unpacked side by side, each as its bytes arrive: a process per layer, forked from a zygote.

Why processes: unpacking is Python (tarfile's header parser, the writer's checks) between syscalls, so threads
would take turns at the GIL; processes unpack two layers at once on two cores. Why a zygote: the puller downloads
in threads, and forking a process while another of its threads holds a lock (stdout's, the allocator's) copies the
lock held forever. The zygote is forked before any thread starts (:class:`Unpackers`), closes every file it was
given, and forks a worker per layer on request (and reaps them: once its parent closes it, every worker has
ended). Each worker reads one layer's compressed bytes from a pipe (fed by the thread that downloads the blob, as
they arrive: :class:`Job`), unpacks them with :func:`shared.layer.deferred.unpack_deferred` into the directory it
was named, writes what came of it to a second pipe as JSON and exits (on that pipe before it, a few times a
second, how many of the blob's bytes it has unpacked: a pull's progress for a large layer). A worker decides
nothing: the process that started it checks the diff_id, applies the lowers and commits the layer, or unpacks it
again the ordinary way (the worker met a hard link into a lower, or was fed bytes it could not use). Workers and the
zygote ignore Ctrl-C: their parent ends their input, and a worker whose input ends early stops there.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import signal
import socket
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from shared.errors import Kind, StrataError
from shared.layer.compress import Counted
from shared.layer.whiteout import OverlayFormat

REQUEST_BYTES = 1 << 16  # one job's request: a path and a label
PIPE_BYTES = 1 << 20  # (the unprivileged limit, /proc/sys/fs/pipe-max-size, is a MiB by default)
PROGRESS_EVERY = 0.25  # seconds between a worker's counts of what it has unpacked


class Job:
    """One layer's worker, seen from its parent: a feed of the blob's bytes (:meth:`feed`, from the thread that
    downloads it, in the order they arrive), then its outcome (:meth:`result`)."""

    def __init__(self, data_fd: int, result_fd: int) -> None:
        self._fd = data_fd
        self._result_fd = result_fd
        self._lock = threading.Lock()  # a write and a close of the feed never cross
        self.fed = 0  # bytes of the blob the worker was given
        self.usable = True  # False: what was fed is not the blob from its start (its outcome is not used)

    def feed(self, offset: int, data: bytes) -> None:
        """The blob's bytes at ``offset``: what the worker had already is skipped (a download that resumes or
        starts again sends it again); a gap ends the feed (unusable)."""
        with self._lock:
            if self._fd < 0:
                return
            if offset > self.fed:
                self.usable = False
                self._close()
                return
            view = memoryview(data)[self.fed - offset:]
            try:
                while view:
                    view = view[os.write(self._fd, view):]
                    self.fed = offset + len(data) - len(view)
            except BrokenPipeError:  # the worker stopped (its outcome says why)
                self._close()

    def abandon(self) -> None:
        """Stop feeding: the outcome is not to be used."""
        with self._lock:
            self.usable = False
            self._close()

    def end(self) -> None:
        """The blob is all there: the worker reads to its end."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def result(self, on_progress: Callable[[int], None] = lambda n: None) -> dict[str, Any] | None:
        """Wait for the worker to finish (it has, once its pipe closes) and return what it wrote; None when its
        outcome is not to be used (abandoned, or it died without a word). Meanwhile ON_PROGRESS hears how many of
        the blob's bytes the worker has unpacked, each time it says (a few times a second)."""
        self.end()
        if self._result_fd < 0:
            return None
        said = bytearray()
        try:
            while data := os.read(self._result_fd, 1 << 16):
                said += data
                count = None
                while said[:1].isdigit() and b"\n" in said:  # counts first, one a line; then the JSON outcome
                    line, _, rest = said.partition(b"\n")
                    count, said = int(line), bytearray(rest)
                if count is not None:
                    on_progress(count)
        finally:
            os.close(self._result_fd)
            self._result_fd = -1
        if not self.usable or not said:
            return None
        doc = json.loads(bytes(said))
        return doc if isinstance(doc, dict) else None


class Unpackers:
    """The zygote, forked when this is made (before any thread), and the workers it forks: :meth:`start` one per
    layer, :meth:`close` when done (the zygote ends; workers end with their input)."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            _zygote(theirs)
        theirs.close()
        self._sock = ours
        self._pid = pid
        self._lock = threading.Lock()

    def start(self, dest: Path, what: str, fmt: OverlayFormat, ids: int | None) -> Job:
        """A worker that unpacks the layer it will be fed into the new directory ``dest``."""
        data_r, data_w = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # a MiB in flight, not 64 KiB: fewer wake-ups of either side
            fcntl.fcntl(data_w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        result_r, result_w = os.pipe2(os.O_CLOEXEC)
        request = json.dumps({"dest": os.fspath(dest), "what": what, "xattrs": fmt.xattr_namespace, "ids": ids})
        try:
            with self._lock:
                socket.send_fds(self._sock, [request.encode()], [data_r, result_w])
        except OSError:
            for fd in (data_w, result_r):
                os.close(fd)
            raise
        finally:
            os.close(data_r)
            os.close(result_w)
        return Job(data_w, result_r)

    def close(self) -> None:
        if self._pid:
            self._sock.close()
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._pid, 0)
            self._pid = 0


def _zygote(sock: socket.socket) -> NoReturn:
    """Fork a worker for each request until the parent closes its end, then wait for the workers (reaped here,
    their resource use counts as the parent's children's: what ``time`` says of a pull includes them); never
    return."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        keep = sock.fileno()
        os.closerange(3, keep)  # nothing of the parent's: its locks (flock), sockets, other pipes
        os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # nor its terminal or the pipes it is read through: nothing here speaks
            os.dup2(null, fd)
        os.close(null)
        _warm()
        while True:
            request, fds, _, _ = socket.recv_fds(sock, REQUEST_BYTES, 2)
            if not request:
                break
            if len(fds) == 2 and os.fork() == 0:
                sock.close()
                _work(request, fds[0], fds[1])
            for fd in fds:
                os.close(fd)
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
        with contextlib.suppress(ChildProcessError):  # (their input has ended: they end)
            while True:
                os.waitpid(-1, 0)
    finally:
        os._exit(0)


def _warm() -> None:
    """Import what every worker needs, once, while the parent starts its downloads: each worker is a fork."""
    import tarfile  # noqa: F401

    from isal import igzip  # noqa: F401

    from shared.layer import deferred  # noqa: F401

    with contextlib.suppress(ImportError):
        import zstandard  # noqa: F401


def _reporter(report_fd: int) -> Callable[[int], None]:
    """How a worker says its count up the result pipe: a line (``12345\\n``), never waited for (the pipe is
    non-blocking until the outcome is written: a line the parent has not made room for is dropped, the next says
    more)."""

    def say(count: int) -> None:
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(report_fd, b"%d\n" % count)

    return say


def _work(request: bytes, data_fd: int, result_fd: int) -> NoReturn:
    """Unpack one layer, saying how far it got as it goes; write its outcome; never return."""
    try:
        os.set_blocking(result_fd, False)
        doc = _unpack(json.loads(request), data_fd, result_fd)
    except BaseException:  # a bug: said to the parent, which unpacks the layer again itself
        doc = {"ok": False, "bug": traceback.format_exc()}
    try:
        os.set_blocking(result_fd, True)
        with open(result_fd, "wb", closefd=True) as out:
            out.write(json.dumps(doc).encode())
    finally:
        os._exit(0)


def _unpack(job: dict[str, Any], data_fd: int, report_fd: int) -> dict[str, Any]:
    from shared.layer.deferred import NeedsLowers, pending_to_json, unpack_deferred
    from shared.layer.whiteout import OVERLAY, USER_OVERLAY

    fmt = OVERLAY if job["xattrs"] == OVERLAY.xattr_namespace else USER_OVERLAY
    try:
        with Counted(io.FileIO(data_fd, "rb"), _reporter(report_fd), PROGRESS_EVERY) as raw:
            done = unpack_deferred(raw, Path(job["dest"]), str(job["what"]), fmt, job["ids"])
    except NeedsLowers:
        return {"ok": False, "needs_lowers": True}
    except StrataError as e:
        return {"ok": False, "message": str(e), "kind": e.kind.name}
    return {"ok": True, "diff_id": str(done.diff_id), "size": done.size, "left_out": list(done.left_out),
            "pending": pending_to_json(done.pending)}


def failure(doc: dict[str, Any]) -> StrataError | None:
    """The error a worker's outcome says, as the parent raises it; None when it says none (done, or the layer is to
    be unpacked again the ordinary way)."""
    if doc.get("ok") or "message" not in doc:
        return None
    return StrataError(str(doc["message"]), Kind[str(doc.get("kind", "INTEGRITY"))])
