"""``run`` = ``create`` + ``start``, as Docker's: in the foreground (exit with the command's code, ``--rm``
honoured here), or with ``-d`` under a monitor (print the ID once the command runs)."""

from __future__ import annotations

from runner.container.create import RunOptions, create
from runner.container.monitor import detach
from runner.container.release import remove
from runner.container.start import StartLock, start
from shared.store.layout import Store


def run(store: Store, opts: RunOptions) -> int:
    container = create(store, opts)
    lock = StartLock(container)
    try:
        if opts.detach:
            detach(container, lock)
            print(container.id)
            return 0
        try:
            return start(container, started=lambda error, code: lock.release())
        finally:
            if opts.remove:
                remove(container, force=True)
    finally:
        lock.release()
