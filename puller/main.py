"""``puller``'s entry point: a warm pull is answered before the command-line library is even imported
(:mod:`puller.warm`); every other command line goes to :mod:`puller.cli`."""

from __future__ import annotations

import os
import sys


def main() -> None:
    from puller import warm

    try:
        answered = warm.answer(sys.argv[1:])
    except KeyboardInterrupt:  # as shared.cli.run_main says it
        print("puller: interrupted", file=sys.stderr)
        sys.exit(130)
    if answered:
        # Nothing is left to close (no thread, no file but these two, no atexit handler), and the interpreter's
        # finalization of some 140 modules would cost a warm pull a seventh of its time (docs/performance.md).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    from puller.cli import main as full

    full()
