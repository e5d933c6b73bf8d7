"""The verbs of ``runner-oci`` (:mod:`runner.oci.main` parses them): each a few lines over the lifecycle
(:mod:`runner.oci.lifecycle`), the queries (state, list, ps, features, spec) and ``exec``
(:mod:`runner.oci.exec`)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runner.oci import lifecycle
from runner.oci.state import State, all_states, default_root
from shared.errors import Kind, StrataError


def dispatch(args: argparse.Namespace) -> int:
    _refuse(args)
    g = lifecycle.Globals(Path(args.root) if args.root else default_root(), args.systemd_cgroup)
    verb = args.verb
    if verb in ("create", "run"):
        from runner.oci import init  # each verb imports what it uses: start, kill, delete are called most

        opts = init.CreateOptions(Path(args.bundle), args.console_socket, args.pid_file, args.no_pivot,
                                       args.no_new_keyring, args.preserve_fds)
        if verb == "create":
            lifecycle.create(g, args.id, opts)
            return 0
        return lifecycle.run(g, args.id, opts, args.detach, args.keep)
    simple: dict[str, Callable[[], object]] = {"start": lambda: lifecycle.start(g, args.id),
              "delete": lambda: lifecycle.delete(g, args.id, args.force),
              "pause": lambda: lifecycle.pause(g, args.id, True),
              "resume": lambda: lifecycle.pause(g, args.id, False),
              "kill": lambda: lifecycle.kill(g, args.id, lifecycle.parse_signal(args.signal), args.all)}
    if verb in simple:
        simple[verb]()
        return 0
    if verb == "state":
        _print(json.dumps(State.read(g.root, args.id).runc_state(), indent=2))
        return 0
    if verb == "list":
        return _list(g, args.format, args.quiet)
    if verb == "ps":
        return _ps(g, args.id, args.format, args.ps_args)
    if verb in ("features", "spec"):
        from runner.oci import features as oci_features
    if verb == "features":
        _print(json.dumps(oci_features.features(), indent=2))
        return 0
    if verb == "spec":
        oci_features.write_spec(Path(args.bundle), args.rootless)
        return 0
    if verb == "update":
        lifecycle.update(g, args.id, _resources(args))
        return 0
    if verb == "exec":
        from runner.oci import exec as oci_exec

        return oci_exec.run(g, args)
    raise StrataError(f"unknown command {verb!r}", Kind.USAGE)


def _refuse(args: argparse.Namespace) -> None:
    """runc's options we take but cannot honour are refused by name when they ask for something."""
    if args.rootless == "true" and os.geteuid() != 0:
        raise StrataError("--rootless=true: runner-oci runs containers as root only", Kind.UNSUPPORTED)
    if args.verb == "exec":
        for flag, value in (("--process-label", args.process_label), ("--apparmor", args.apparmor),
                            ("--cgroup", args.cgroup)):
            if value:
                raise StrataError(f"exec {flag} is not supported by runner-oci", Kind.UNSUPPORTED)
        if args.preserve_fds:
            raise StrataError("exec --preserve-fds is not supported by runner-oci (the exec stage passes on no fd "
                              "but stdio)", Kind.UNSUPPORTED)


def _print(text: str) -> None:
    sys.stdout.write(text + "\n")


def _list(g: lifecycle.Globals, fmt: str, quiet: bool) -> int:
    states = all_states(g.root)
    if quiet:
        for st in states:
            _print(st.id)
        return 0
    docs = [st.runc_state() for st in states]
    if fmt == "json":
        _print(json.dumps(docs))
        return 0
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    rows += [(d["id"], str(d["pid"]), d["status"], d["bundle"], d["created"], d["owner"]) for d in docs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        _print("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _ps(g: lifecycle.Globals, container_id: str, fmt: str, ps_args: list[str]) -> int:
    """runc's ps: the pids of the container's group (json), or the host's ps filtered to them (table)."""
    st = State.read(g.root, container_id)
    pids = st.group().procs() if st.status != "stopped" else []
    if fmt == "json":
        _print(json.dumps(pids))
        return 0
    try:
        out = subprocess.run(["ps", *(ps_args or ["-ef"])], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        raise StrataError("ps: no ps on this host (give --format json for the pids)", Kind.SYSTEM) from None
    lines = out.splitlines()
    if not lines:
        return 0
    head = lines[0].split()
    if "PID" not in head:
        raise StrataError("ps: its output has no PID column", Kind.SYSTEM)
    column = head.index("PID")
    _print(lines[0])
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > column and fields[column].isdigit() and int(fields[column]) in pids:
            _print(line)
    return 0


def _resources(args: argparse.Namespace) -> dict[str, Any]:
    """``update``'s LinuxResources: the -r document, or runc's flags made into one."""
    if args.resources:
        try:
            text = sys.stdin.read() if args.resources == "-" else Path(args.resources).read_text()
            doc = json.loads(text)
        except (OSError, ValueError) as e:
            raise StrataError(f"update: cannot read the resources {args.resources}: {e}", Kind.USAGE) from None
        if not isinstance(doc, dict):
            raise StrataError("update: the resources are not a JSON object", Kind.USAGE)
        return dict(doc)

    def number(text: str | None, flag: str) -> int | None:
        if text is None:
            return None
        from runner.isolation.cgroups import parse_size

        try:
            return int(text)
        except ValueError:
            size = parse_size(text, flag)
            return size if size is not None else 0

    out: dict[str, Any] = {}
    memory = {k: number(v, f) for k, v, f in (("limit", args.memory, "--memory"),
                                              ("swap", args.memory_swap, "--memory-swap"),
                                              ("reservation", args.memory_reservation, "--memory-reservation"))
              if v is not None}
    cpu = {k: number(v, f) for k, v, f in (("quota", args.cpu_quota, "--cpu-quota"),
                                           ("period", args.cpu_period, "--cpu-period"),
                                           ("shares", args.cpu_share, "--cpu-share")) if v is not None}
    if memory:
        out["memory"] = memory
    if cpu:
        out["cpu"] = cpu
    if args.pids_limit is not None:
        out["pids"] = {"limit": number(args.pids_limit, "--pids-limit")}
    return out
