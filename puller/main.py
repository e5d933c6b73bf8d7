"""``puller``'s entry point: a warm pull is answered before the command-line library is even imported
(:mod:`puller.warm`); every other command line goes to :mod:`puller.cli`."""

from __future__ import annotations

import sys


def main() -> None:
    from puller import warm

    try:
        if warm.answer(sys.argv[1:]):
            sys.exit(0)
    except KeyboardInterrupt:  # as shared.cli.run_main says it
        print("puller: interrupted", file=sys.stderr)
        sys.exit(130)
    from puller.cli import main as full

    full()
