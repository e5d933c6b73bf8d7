"""runner/net/rtnl.py imports pyroute2's message classes with stand-ins for ``logging`` and ``traceback`` (issue 21):
neither is imported by the bridge's netlink, the messages still encode and decode, and the first use of a stand-in
(pyroute2 logging a warning) reaches the real module."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.unit import fresh_python

PROBE = """
import sys
before = set(sys.modules)
from runner.net import rtnl
print(sorted({"logging", "traceback"} & (set(sys.modules) - before)))
msg = rtnl.ifinfmsg()
msg["index"] = 7
msg["attrs"] = [("IFLA_IFNAME", "stvx0"), ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "veth")]})]
msg.encode()
back = rtnl.ifinfmsg(msg.data)
back.decode()
print(back["index"], back.get_attr("IFLA_IFNAME"), back.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND"))
print(isinstance(rtnl.NetlinkError(2), OSError) or issubclass(rtnl.NetlinkError, Exception))
import pyroute2.netlink as netlink
netlink.log.setLevel(40)  # the stand-in logger: the real one is looked up now
import logging
print(netlink.log.name, logging.getLogger("pyroute2.netlink").level, "logging" in sys.modules)
print(type(sys.modules["logging"]).__name__, netlink.traceback.format_exc is sys.modules["traceback"].format_exc)
"""


def test_the_messages_work_without_logging_and_traceback_until_used() -> None:
    done = subprocess.run([fresh_python(), "-c", PROBE], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.splitlines() == ["[]", "7 stvx0 veth", "True", "pyroute2.netlink 40 True", "module True"]
