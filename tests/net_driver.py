"""Runs one operation of :mod:`runner.net` for the network tests, inside the stand-in host namespace the test
runs it in (``ip netns exec strata-t-...``), and prints its result as one JSON line.

    python -m tests.net_driver '{"op": "attach", "root": R, "netns": PATH, "opts": {...}, "fault": "veth:raise"}'

``fault`` is STEP:raise (the attach fails after STEP) or STEP:hang (it prints ``{"hang": STEP}`` and stalls there,
for a kill -9 midway); ``hold`` keeps the process alive after a successful attach (a runner that stays). The
fault is injected from here, around the real call that ends the step (:data:`STEPS`): the library has no hook.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from runner.net import core, link
from runner.net.model import AttachOptions, PortSpec
from shared.errors import StrataError
from shared.store.layout import Store

# An attach's steps, each as the real call that ends it: (where it is looked up, its name, before or after the call,
# which call of it). "recorded" is the pending record written, so the fault comes as the bridge is about to be made;
# "nat" is the endpoint attached, the tables and ip_forward reconciled and the peers' hosts files rewritten (the
# attach's own refresh, not a sweep's); "forward" is ip_forward turned on, before the tables are written.
STEPS: dict[str, tuple[Any, str, str, Callable[..., bool]]] = {
    "recorded": (link, "ensure_bridge", "before", lambda *a, **k: True),
    "bridge": (link, "ensure_bridge", "after", lambda *a, **k: True),
    "veth": (link, "add_veth", "after", lambda *a, **k: True),
    "configured": (link, "configure_inside", "after", lambda *a, **k: True),
    "nat": (core, "refresh_hosts", "after", lambda records, networks, skip: skip is not None),
    "forward": (link, "sysctl", "after", lambda key, value: (key, value) == (core.IP_FORWARD, "1")),
}


def inject(step: str, action: str) -> None:
    """Fail (``raise``) or stall (``hang``, announced on stdout) this process's attach at STEP, once."""
    where, name, when, matches = STEPS[step]
    real = getattr(where, name)
    fired = False

    def fault() -> None:
        if action == "raise":
            raise StrataError(f"injected failure after {step}")
        print(json.dumps({"hang": step}), flush=True)
        time.sleep(3600)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        nonlocal fired
        due = not fired and matches(*args, **kwargs)
        fired = fired or due
        if due and when == "before":
            fault()
        result = real(*args, **kwargs)
        if due and when == "after":
            fault()
        return result

    setattr(where, name, wrapped)


def main(req: dict[str, Any]) -> int:
    store = Store(Path(req["root"]))
    fault = req.get("fault")
    if fault:
        inject(*fault.split(":"))
    op = req["op"]
    if op == "attach":
        raw = dict(req["opts"])
        raw["publish"] = tuple(PortSpec.parse(p) for p in raw.get("publish", ()))
        for key in ("aliases", "dns", "add_hosts", "exposed"):
            raw[key] = tuple(raw.get(key, ()))
        for key in ("hosts_path", "host_resolv"):
            if raw.get(key):
                raw[key] = Path(raw[key])
        started = time.perf_counter()
        result = core.attach(store, req["netns"], AttachOptions(**raw))
        took = time.perf_counter() - started
        out = {"endpoint": result.endpoint.to_json() if result.endpoint else None, "hosts": result.hosts,
               "resolv_conf": result.resolv_conf, "seconds": took}
        print(json.dumps(out), flush=True)
        if req.get("hold"):
            time.sleep(3600)
    elif op == "release":
        core.release(store, req["cid"], req.get("network"))
        print(json.dumps({"ok": True}))
    elif op == "prune":
        print(json.dumps({"removed": core.prune(store)}))
    elif op == "none":
        print(json.dumps(asdict(core.files_without_network(req["hostname"]))))
    else:
        raise SystemExit(f"unknown op {op}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(json.loads(sys.argv[1])))
    except StrataError as e:
        print(json.dumps({"error": str(e)}), flush=True)
        sys.exit(1)
