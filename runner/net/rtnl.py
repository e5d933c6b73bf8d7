"""A route netlink socket that speaks pyroute2's messages: what :mod:`runner.net.link` sends and reads.

pyroute2 is how the runner encodes and decodes netlink (ifinfmsg, ifaddrmsg, rtmsg and their nested attributes:
a veth's peer, a bridge port's mode). Its IPRoute is not used: in 0.9 it runs every request through an asyncio
loop, and importing it costs more than all of ``runner run``'s own imports (callgrind: +244 million
instructions; the message classes alone +61 million; pyroute2's package ``__init__``, which imports every module
of the library, +412 million). So this module imports the three message classes from their modules, without the
package's ``__init__`` (:func:`_bare_package`) and with stand-ins for ``logging`` and ``traceback``
(:class:`_Later`), and does what IPRoute's sync calls did on a plain socket: send one request, read its answer (a
dump to its end, anything else to its acknowledgement), raise pyroute2's :class:`NetlinkError` for an error. One
request at a time, by sequence number; a dump the kernel says was interrupted (a link changed meanwhile) is asked again.
"""

from __future__ import annotations

import socket
import struct
import sys
import types
from typing import Any

from shared.errors import Kind, StrataError

NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x200, 0x400, 0x300
NLM_F_DUMP_INTR = 0x10
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_GETADDR, RTM_NEWROUTE, RTM_GETROUTE = 20, 22, 24, 26
CREATE = NLM_F_CREATE | NLM_F_EXCL
_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr: length, type, flags, sequence, port
_DUMP_TRIES = 5


def _bare_package() -> None:
    """Register pyroute2 as the module its spec makes, unexecuted: Python finds its submodules by its path as
    always, and its ``__init__`` (which imports the whole library and defines nothing the messages use) never
    runs in this process."""
    if "pyroute2" not in sys.modules:
        import importlib.util

        spec = importlib.util.find_spec("pyroute2")
        if spec is None:
            raise StrataError("pyroute2 is not installed: run scripts/setup", Kind.SYSTEM)
        sys.modules["pyroute2"] = importlib.util.module_from_spec(spec)


class _Later(types.ModuleType):
    """A stand-in for a module pyroute2's message modules import at their top but use only on paths the runner never
    takes (``logging``: a warning of a malformed message; ``traceback``: its text), ~7 ms of every bridge run's
    imports: the first use of any attribute imports the real module, which the stand-in then hands everything
    to. It is in ``sys.modules`` only while those modules are imported (:data:`_STAND_INS`); ``import logging``
    anywhere after gets the real module."""

    def __getattr__(self, attr: str) -> Any:
        return getattr(_real(self.__name__), attr)


class _LaterLogging(_Later):
    """``logging``, whose ``getLogger`` pyroute2 calls at import: the logger is looked up at its first use."""

    def getLogger(self, name: str | None = None) -> Any:
        return _LaterLogger(name)


class _LaterLogger:
    def __init__(self, name: str | None) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(_real("logging").getLogger(self._name), attr)


def _real(name: str) -> Any:
    if isinstance(sys.modules.get(name), _Later):
        del sys.modules[name]
    __import__(name)
    return sys.modules[name]


_bare_package()
_STAND_INS = [name for name in ("logging", "traceback") if name not in sys.modules]
sys.modules.update({name: (_LaterLogging if name == "logging" else _Later)(name) for name in _STAND_INS})
try:
    from pyroute2.netlink.exceptions import NetlinkError  # after _bare_package and the stand-ins
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
    from pyroute2.netlink.rtnl.rtmsg import rtmsg
finally:
    for _name in _STAND_INS:
        if isinstance(sys.modules.get(_name), _Later):
            del sys.modules[_name]

__all__ = ["NetlinkError", "Rtnl", "ifaddrmsg", "ifinfmsg", "rtmsg"]
_ANSWERS: dict[int, Any] = {RTM_NEWLINK: ifinfmsg, RTM_NEWADDR: ifaddrmsg, RTM_NEWROUTE: rtmsg}


class Rtnl:
    """A NETLINK_ROUTE socket in the network namespace this thread is in when it is made (it stays there)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        try:
            self.sock.bind((0, 0))
        except BaseException:
            self.sock.close()
            raise
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def request(self, msg: Any, kind: int, flags: int = 0) -> list[Any]:
        """Send MSG as a request of type KIND (with FLAGS, e.g. :data:`CREATE`) and return the messages that
        answer it, once the kernel acknowledged it; NetlinkError if it refused."""
        return self._send(msg, kind, NLM_F_REQUEST | NLM_F_ACK | flags)

    def dump(self, msg: Any, kind: int) -> list[Any]:
        """Every object a dump request of type KIND returns (MSG sets its family or filter)."""
        for _ in range(_DUMP_TRIES):
            found = self._send(msg, kind, NLM_F_REQUEST | NLM_F_DUMP)
            if not any(m["header"]["flags"] & NLM_F_DUMP_INTR for m in found):
                return found
        raise NetlinkError(11, "the kernel kept interrupting the dump")  # EAGAIN

    def _send(self, msg: Any, kind: int, flags: int) -> list[Any]:
        self.seq += 1
        msg["header"]["type"] = kind
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = self.seq
        msg.encode()
        self.sock.send(msg.data)
        return self._answer(self.seq)

    def _answer(self, seq: int) -> list[Any]:
        found: list[Any] = []
        while True:
            data = self.sock.recv(1 << 18)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind, _flags, number, _port = _HEADER.unpack_from(data, offset)
                if length < _HEADER.size:
                    raise NetlinkError(71, "malformed netlink message")  # EPROTO
                part, offset = data[offset:offset + length], offset + ((length + 3) & ~3)
                if number != seq:  # an answer to nothing we are waiting for
                    continue
                if kind == NLMSG_ERROR:
                    code = struct.unpack_from("=i", part, _HEADER.size)[0]
                    if code:
                        raise NetlinkError(-code)
                    return found
                if kind == NLMSG_DONE:
                    return found
                if kind in _ANSWERS:
                    answer = _ANSWERS[kind](part)
                    answer.decode()
                    found.append(answer)
