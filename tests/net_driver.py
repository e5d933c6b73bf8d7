"""Runs one operation of :mod:`runner.net` for the network tests, inside the stand-in host namespace the test
runs it in (``ip netns exec strata-t-...``), and prints its result as one JSON line.

    python -m tests.net_driver '{"op": "attach", "root": R, "netns": PATH, "opts": {...}, "fault": "veth:raise"}'

``fault`` is STEP:raise (the attach fails after STEP) or STEP:hang (it prints ``{"hang": STEP}`` and stalls there,
for a kill -9 midway); ``hold`` keeps the process alive after a successful attach (a runner that stays).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from runner.net import core
from runner.net.model import AttachOptions, PortSpec
from shared.errors import StrataError
from shared.store.layout import Store


def main(req: dict[str, Any]) -> int:
    store = Store(Path(req["root"]))
    fault = req.get("fault")
    if fault:
        step, action = fault.split(":")

        def checkpoint(at: str) -> None:
            if at != step:
                return
            if action == "raise":
                raise StrataError(f"injected failure after {at}")
            print(json.dumps({"hang": at}), flush=True)
            time.sleep(3600)

        core.checkpoint = checkpoint
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
