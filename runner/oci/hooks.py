"""config.json's hooks (runtime-spec config.md "POSIX-platform Hooks"): read and checked, and run with the
container's state on stdin. Apart from the rest of config.json so that ``start`` and ``delete``, which run the
poststart and poststop hooks of the saved config.json, read them without the whole reader and its imports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.errors import Kind, StrataError

HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
TIMEOUT = 120.0  # seconds, when the hook gives none


@dataclass(frozen=True)
class Hook:
    path: str
    args: tuple[str, ...]
    env: tuple[str, ...]
    timeout: int | None


class HookFailed(StrataError):
    """A hook exited non-zero, outlasted its timeout or could not be run."""


def _bad(where: str, what: str) -> StrataError:
    return StrataError(f"config.json: {where}: {what}", Kind.USAGE)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(where, "expected an array of strings")
    return tuple(value)


def parse(value: Any) -> dict[str, tuple[Hook, ...]]:
    """``hooks``: each kind a list of {path, args, env, timeout}; an unknown kind or key is refused by name."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise _bad("hooks", "expected an object")
    for key in value:
        if key not in HOOK_KINDS:
            raise StrataError(f"config.json: hooks.{key} is not supported by runner-oci (not a field runner-oci "
                              "knows)", Kind.USAGE)
    out = {}
    for kind in HOOK_KINDS:
        items = value.get(kind) or []
        if not isinstance(items, list):
            raise _bad(f"hooks.{kind}", "expected an array")
        out[kind] = tuple(_hook(h, f"hooks.{kind}[{i}]") for i, h in enumerate(items))
    return out


def _hook(value: Any, where: str) -> Hook:
    if not isinstance(value, dict):
        raise _bad(where, "expected an object")
    for key in value:
        if key not in ("path", "args", "env", "timeout"):
            raise StrataError(f"config.json: {where}.{key} is not supported by runner-oci (not a field runner-oci "
                              "knows)", Kind.USAGE)
    path = value.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise _bad(f"{where}.path", f"{path!r} is not an absolute path")
    timeout = value.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1):
        raise _bad(f"{where}.timeout", "expected an integer of 1 or more")
    return Hook(path, _strings(value.get("args"), f"{where}.args"), _strings(value.get("env"), f"{where}.env"),
                timeout)


def of(config: Mapping[str, Any], kind: str) -> tuple[Hook, ...]:
    """The hooks of KIND in a saved config.json document (``start``'s poststart, ``delete``'s poststop)."""
    return parse(config.get("hooks")).get(kind, ())


def run(hooks: Sequence[Hook], state: bytes, kind: str) -> None:
    """Each hook with the state on stdin (runtime-spec config.md "POSIX-platform Hooks"); one that fails or
    outlasts its timeout fails the step, in runc's words."""
    import subprocess  # only where a hook runs
    for i, hook in enumerate(hooks):
        try:
            done = subprocess.run(list(hook.args) or [hook.path], input=state,  # args[0] is argv[0]: execv's
                                  capture_output=True, env=dict(e.split("=", 1) for e in hook.env if "=" in e),
                                  executable=hook.path, timeout=hook.timeout or TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise HookFailed(f"error running {kind} hook #{i}: timeout after {hook.timeout or TIMEOUT} "
                               "seconds", Kind.SYSTEM) from None
        except OSError as e:
            raise HookFailed(f"error running {kind} hook #{i}: {hook.path}: {e.strerror}", Kind.SYSTEM) from None
        if done.returncode != 0:
            out = (done.stdout + done.stderr).decode(errors="replace").strip().replace("\n", " ")[:300]
            raise HookFailed(f"error running {kind} hook #{i}: exit status {done.returncode}"
                               + (f", output: {out}" if out else ""), Kind.SYSTEM)


