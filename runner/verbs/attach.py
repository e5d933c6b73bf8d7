"""``runner attach``, as Docker's: a running container's terminal (with -t; ours raw, resizes passed on) or its
stdout and stderr, and our stdin to it if it was created with -i (not with ``--no-stdin``), through its
monitor's attach server (:mod:`runner.executor.attach`). It ends when the container exits (with its exit code)
or when the user types the detach keys (Docker's words, ``read escape sequence``, and exit 1), leaving the
container running. Without -t, ``--sig-proxy`` (default true) passes our signals on to PID 1, as Docker's."""

from __future__ import annotations

import os
import sys

from runner.container.record import find
from runner.container.run import attached
from runner.executor import attach as server
from runner.executor.supervise import FORWARDED_SIGNALS
from shared.errors import Kind, StrataError, usage
from shared.store.layout import Store

_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")  # Go's strconv.ParseBool, as Docker reads --sig-proxy=
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def attach(store: Store, key: str, detach_keys: str | None, no_stdin: bool, sig_proxy: str) -> int:
    keys = server.detach_keys(detach_keys)  # the daemon's first check, as Docker's
    if sig_proxy not in _GO_TRUE + _GO_FALSE:
        raise usage(f'invalid argument "{sig_proxy}" for "--sig-proxy" flag: strconv.ParseBool: parsing '
                    f'"{sig_proxy}": invalid syntax')
    container = find(store, key)
    if container.state().status != "running":
        raise StrataError("You cannot attach to a stopped container, start it first", Kind.STATE)
    spec = container.spec
    stdin = spec.interactive and not no_stdin
    if stdin and spec.terminal and not os.isatty(sys.stdin.fileno()):
        raise StrataError("the input device is not a TTY", Kind.USAGE, exit_code=1)
    try:
        sock = server.connect(container.dir)
    except OSError:  # running, but not under a monitor: a foreground run (or start -a) owns its output
        raise StrataError(f"container {container.name} runs in the foreground of the runner that started it: "
                          "attach is to containers run with -d or -it, or started without -a", Kind.STATE) \
            from None
    signals = FORWARDED_SIGNALS if sig_proxy in _GO_TRUE and not spec.terminal else ()
    try:
        code = attached(container, sock, stdin, keys, signals)
    finally:
        sock.close()
    if code is None:
        print("read escape sequence", file=sys.stderr)
        return 1
    return code
