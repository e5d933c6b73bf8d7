"""``run``, ``create`` and ``bundle`` with Docker's ``--pull missing|always|never`` (default missing), and the image
verbs a Docker user types at the runner (``runner images``, ``pull``, ``rmi``...), which are puller's.

How the runner gets an image pulled: it runs ``puller pull REF`` as a child process (this Python, ``-m puller``,
the same ``--root``, environment and so settings file and credentials), its progress on our stderr, then finds
the image in the store as for any run. Not by importing the puller: the tools stay two over one library (the
runner loads no HTTP, registry or unpacking code, and nothing of the puller can change the runner's start), and
the pull is exactly ``puller pull``: its mirrors, resume, progress, warm answer and errors, with no second way
into a registry to keep equal to the first. A failed pull is one line (the puller's message) and exit 125.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from shared import reference
from shared.errors import Kind, StrataError, not_found, usage
from shared.store.layout import Store

if TYPE_CHECKING:
    from runner.container.options import RunOptions

POLICIES = ("always", "missing", "never")  # Docker's, in its error's order
# what ``runner VERB`` means, as ``puller``'s verbs name it (Docker's ``tag`` is a copy within the store)
PULLERS = {"images": "images", "pull": "pull", "rmi": "rmi", "push": "push", "save": "save", "load": "load",
           "login": "login", "logout": "logout", "tag": "copy", "image": ""}
IMAGE_VERBS = {"ls": "images", "list": "images", "rm": "rmi", "remove": "rmi", "tag": "copy"}  # ``image X``


def fetcher(store: Store, opts: RunOptions) -> Callable[[StrataError], None]:
    """``--pull``: with ``always`` the image is pulled now; what is returned is what ``create`` calls when the
    store lacks the image: ``missing`` pulls it (after Docker's "Unable to find image" line), ``never`` raises
    Docker's "No such image"."""
    if opts.pull not in POLICIES:
        raise usage(f"invalid pull option: {opts.pull!r}: must be one of \"always\", \"missing\" or \"never\"")
    if opts.pull == "always":
        pull(store, opts.image)

    def missing(error: StrataError) -> None:
        try:
            ref = reference.parse(opts.image)
        except StrataError:
            raise error from None  # not a name a registry could have: the store's own answer
        if opts.pull == "never":
            raise not_found(f"No such image: {ref.familiar()}")
        print(f"Unable to find image '{ref.familiar()}' locally", file=sys.stderr, flush=True)
        pull(store, opts.image)

    return missing


def pull(store: Store, image: str) -> None:
    """``puller --root ROOT pull IMAGE`` in a child, its progress (its stdout) on our stderr, so that what ``run``
    prints on stdout is the container's alone; its error becomes ours, one line."""
    import signal
    import subprocess

    import runner

    source = str(Path(runner.__file__).resolve().parent.parent)  # where the runner came from has the puller too
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (source, os.environ.get("PYTHONPATH"))))}
    argv = [sys.executable, "-m", "puller", "--root", str(store.root), "pull", image]
    sys.stderr.flush()
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(), stderr=subprocess.PIPE,
                             env=env)
    try:
        _, err = child.communicate()
    except BaseException:  # Ctrl-C (the child has it too, from the terminal) or our own end: it ends with us
        child.send_signal(signal.SIGINT)
        child.wait()
        raise
    if child.returncode == 0:
        return
    if child.returncode == 130:
        raise KeyboardInterrupt
    raise StrataError(_failure(err.decode(errors="replace").splitlines(), child.returncode), Kind.REGISTRY)


def _failure(lines: Sequence[str], code: int) -> str:
    """The puller's one-line error, as ours; what else it said (warnings) goes to our stderr first."""
    prefix = "puller: error: "
    said = next((line for line in reversed(lines) if line.startswith(prefix)), None)
    for line in lines:
        if line is not said:
            print(line, file=sys.stderr)
    return said.removeprefix(prefix) if said else f"puller pull failed (exit status {code})"


def pointer(verb: str, args: Sequence[str], root: str | None) -> StrataError:
    """Why ``runner VERB ARGS`` is no command of the runner's: the puller's command that does it, to copy."""
    words = list(args)
    if verb == "image":  # Docker's ``image ls|rm|inspect|...``
        sub = words.pop(0) if words else "ls"
        doing = IMAGE_VERBS.get(sub, sub)
    else:
        doing = PULLERS[verb]
    import shlex

    typed = " ".join(["runner", verb, *args])
    theirs = " ".join(shlex.quote(w) for w in ["puller", *(("--root", root) if root else ()), doing, *words])
    return usage(f"'{typed}' is '{theirs}': images are puller's")
