"""Issue 18's network holes, each attacked from inside a real container (``runner run``, the busybox test image
with the default capabilities, CAP_NET_RAW among them) and judged on the stand-in host: a throwaway network
namespace, as in tests/test_network.py, whose fixtures these tests share.

* loopback (CVE-2020-8558 class): a container sends a frame to its gateway's MAC for 127.0.0.1; a LAN neighbour
  sends one to the host's MAC for a port published on 127.0.0.1;
* spoofing: a container answers ARP for a peer's address, sends as the peer's address and as the peer's MAC;
* two stores: a second store's containers, prune and reconcile beside a first store's running container; a
  second store whose 5-hex tag is the first's (a path chosen for it) runs beside the first's; a store killed as
  it turns ip_forward on, then a second store, then the first's prune; a host-wide lock planted as a symlink.

Raw frames are built here and sent by tests/probe.c's ``frames`` verb inside the container.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from shared.errors import StrataError
from tests import test_network
from tests.test_network import ENV, HTTPD, PY, RETRY, ROOT, Host, sh
from tests.tools import runtime_option

# tests/test_network.py's fixtures: the stand-in host, its store with the test image, and its autouse checks
host, image = test_network.host, test_network.image
_net_tools, machine_namespace_unchanged = test_network._net_tools, test_network.machine_namespace_unchanged



# -- frames ------------------------------------------------------------------------------------------------------

def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _ip(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def _checksum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(dst_mac: str, src_mac: str, src: str, dst: str, proto: int, sport: int, dport: int,
         data: bytes = b"") -> str:
    """An Ethernet frame of one UDP datagram (proto 17) or TCP SYN (6), checksums right, as hex."""
    if proto == 17:
        seg = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
        at = 6
    else:
        seg = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
        at = 16
    pseudo = _ip(src) + _ip(dst) + struct.pack("!BBH", 0, proto, len(seg))
    seg = seg[:at] + struct.pack("!H", _checksum(pseudo + seg)) + seg[at + 2:]
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), 0x1234, 0, 64, proto, 0, _ip(src), _ip(dst))
    head = head[:10] + struct.pack("!H", _checksum(head)) + head[12:]
    return (_mac(dst_mac) + _mac(src_mac) + b"\x08\x00" + head + seg).hex()


def arp_reply(dst_mac: str, src_mac: str, sender: tuple[str, str], target: tuple[str, str]) -> str:
    """An ARP reply: SENDER (MAC, IP) is what the receiver's neighbour table is to believe."""
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, _mac(sender[0]), _ip(sender[1]), _mac(target[0]),
                       _ip(target[1]))
    return (_mac(dst_mac) + _mac(src_mac) + b"\x08\x06" + body).hex()


# -- the stand-in host's listeners -------------------------------------------------------------------------------

UDP_SENTINEL = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    data, addr = s.recvfrom(2048); print(addr[0], data.decode(errors="replace"), flush=True)
"""

SNIFFER = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); s.bind((sys.argv[1], 0))
print("listening", flush=True)
while True:
    f = s.recv(65535)
    if f[12:14] == b"\\x08\\x00" and f[23] in (6, 17):
        print(socket.inet_ntoa(f[26:30]), int.from_bytes(f[34:36], "big"), flush=True)
"""

SEND = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind((sys.argv[1], 0))
for _ in range(3):
    for frame in sys.argv[2:]:
        s.send(bytes.fromhex(frame))
"""


def listen(h: Host, script: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(["ip", "netns", "exec", h.ns, PY, "-c", script, *args], stdout=subprocess.PIPE, text=True)
    h.procs.append(proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
    return proc


def heard(proc: subprocess.Popen[str]) -> list[str]:
    time.sleep(0.5)  # what was sent before has long been delivered or dropped: veth delivery is synchronous
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    return out.splitlines()


def endpoint(h: Host, network: str, name: str) -> dict[str, Any]:
    """From ``network inspect``: the container's IP, MAC, host veth; the network's bridge, gateway, subnet, and
    the bridge's MAC on the stand-in host."""
    doc = json.loads(h.runner("network", "inspect", network).stdout)[0]
    ep = next(c for c in doc["Containers"].values() if c["Name"] == name)
    config = doc["IPAM"]["Config"][0]
    bridge = doc["Options"]["bridge"]
    return {"ip": ep["IPv4Address"].split("/")[0], "mac": ep["MacAddress"], "veth": ep["HostInterface"],
            "bridge": bridge, "gateway": config["Gateway"], "subnet": config["Subnet"], "gw_mac": mac_of(h, bridge)}


def mac_of(h: Host, ifname: str) -> str:
    return str(json.loads(h.run("ip", "-j", "link", "show", ifname))[0]["address"])


def http_ok(h: Host, address: str, port: int, *, tries: int = 50) -> str:
    code = ("import sys, urllib.request; print(urllib.request.urlopen(f'http://{sys.argv[1]}:{sys.argv[2]}/', "
            "timeout=2).read().decode(), end='')")
    for _ in range(tries):
        out = h.run(PY, "-c", code, address, str(port), check=False)
        if out:
            return out
        time.sleep(0.1)
    return ""


def sysctls(h: Host) -> dict[str, str]:
    out = h.run("sh", "-c", "grep -r . /proc/sys/net/ipv4/conf/*/route_localnet /proc/sys/net/ipv4/ip_forward")
    return dict(line.split(":", 1) for line in out.splitlines())


# -- 5. loopback (CVE-2020-8558 class) ---------------------------------------------------------------------------

# the rules are the host's; the attacker's capabilities are each executor's
RUNTIMES = ["ours", "runc", "crun", "runner-oci"]


def runtime_args(runtime: str) -> tuple[str, ...]:
    return () if runtime == "ours" else ("--runtime", runtime_option(runtime))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_container_cannot_reach_a_service_on_the_hosts_loopback(image: Host, probe: Path, runtime: str) -> None:
    """From the default bridge and from an --internal network: a UDP datagram to 127.0.0.1 sent to the
    gateway's MAC must not reach a service bound to the stand-in host's 127.0.0.1; no sysctl is left changed."""
    h = image
    before = sysctls(h)
    h.runner("network", "create", "--internal", "sealed")
    sentinel = listen(h, UDP_SENTINEL, "127.0.0.1", "9999")
    for net in ("bridge", "sealed"):
        h.runner("run", "-d", *runtime_args(runtime), "--name", f"atk-{net}", "--network", net, "-v",
                 f"{probe}:/probe:ro", h.image, "sleep", "300")
        ep = endpoint(h, net, f"atk-{net}")
        assert sysctls(h)["/proc/sys/net/ipv4/conf/all/route_localnet"] == "0"
        frame = ipv4(ep["gw_mac"], ep["mac"], ep["ip"], "127.0.0.1", 17, 40000, 9999, f"from {net}".encode())
        out = h.runner("exec", f"atk-{net}", "/probe", "frames", "eth0", "3", "50", frame).stdout
        assert out == "sent 3\n"
    time.sleep(0.3)
    h.run(PY, "-c", "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'control', "
          "('127.0.0.1', 9999))")
    assert heard(sentinel) == ["127.0.0.1 control"]  # the host's own datagram, and nothing from a container
    h.runner("rm", "-f", "atk-bridge", "atk-sealed")
    h.runner("network", "rm", "sealed")
    assert sysctls(h) == before
    h.assert_clean()


@pytest.fixture
def neighbour(host: Host) -> Iterator[str]:
    """A LAN neighbour: a second throwaway namespace (192.0.2.2) on a veth to the stand-in host (192.0.2.1)."""
    ns = f"{host.ns}-nb"
    sh("ip", "netns", "add", ns)
    try:
        host.run("ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan1", "netns", ns)
        host.run("ip", "addr", "add", "192.0.2.1/24", "dev", "lan0")
        host.run("ip", "link", "set", "lan0", "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", "192.0.2.2/24", "dev", "lan1")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lan1", "up")
        yield ns
    finally:
        sh("ip", "netns", "del", ns)  # lan1 goes with it, and lan0 with its peer


def test_a_lan_neighbour_cannot_reach_a_port_published_on_127_0_0_1(image: Host, neighbour: str) -> None:
    """A TCP SYN for 127.0.0.1:8181 (published there) sent to the host's MAC must not be DNATed to the
    container (judged by a sniffer on the container's host veth); the same neighbour's SYN for a port published
    on every address does arrive (the sniffer works), and 127.0.0.1:8181 answers the host itself."""
    h = image
    before = sysctls(h)
    h.runner("run", "-d", "--name", "web", "--hostname", "web", "-p", "127.0.0.1:8181:80", "-p", "8282:80", h.image,
             "sh", "-c", HTTPD)
    ep = endpoint(h, "bridge", "web")
    assert http_ok(h, "127.0.0.1", 8181) == "web\n"
    sniffer = listen(h, SNIFFER, ep["veth"])
    lan0 = mac_of(h, "lan0")
    lan1 = str(json.loads(sh("ip", "netns", "exec", neighbour, "ip", "-j", "link", "show", "lan1"))[0]["address"])
    attack = ipv4(lan0, lan1, "192.0.2.2", "127.0.0.1", 6, 40001, 8181)
    control = ipv4(lan0, lan1, "192.0.2.2", "192.0.2.1", 6, 40002, 8282)
    subprocess.run(["ip", "netns", "exec", neighbour, PY, "-c", SEND, "lan1", attack, control], check=True,
                   timeout=30, env=ENV)
    got = set(heard(sniffer))
    assert "192.0.2.2 40002" in got and "192.0.2.2 40001" not in got, got
    h.runner("rm", "-f", "web")
    assert sysctls(h) == before


# -- anti-spoofing ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_container_cannot_take_a_peers_address_or_mac(image: Host, probe: Path, runtime: str) -> None:
    """Attacker A, on the default bridge with peer B: ARP replies and a gratuitous ARP saying B's address is at
    A's MAC, a datagram from B's address, a frame from B's MAC. The stand-in host must keep B's MAC for B's
    address, the bridge must keep B's MAC on B's port, a listener on the host must hear only A's own datagrams,
    and the host must still reach B."""
    h = image
    h.runner("run", "-d", *runtime_args(runtime), "--name", "atk", "-v", f"{probe}:/probe:ro", h.image, "sleep",
             "300")
    h.runner("run", "-d", "--name", "peer", "--hostname", "b", h.image, "sh", "-c", HTTPD)
    a, b = endpoint(h, "bridge", "atk"), endpoint(h, "bridge", "peer")
    gw, gw_mac = a["gateway"], a["gw_mac"]
    assert http_ok(h, b["ip"], 80) == "b\n"  # the host now has B's MAC for B's address
    sentinel = listen(h, UDP_SENTINEL, gw, "9998")
    frames = [arp_reply(gw_mac, a["mac"], (a["mac"], b["ip"]), (gw_mac, gw)),
              arp_reply("ff:ff:ff:ff:ff:ff", a["mac"], (a["mac"], b["ip"]), ("ff:ff:ff:ff:ff:ff", b["ip"])),
              ipv4(gw_mac, a["mac"], b["ip"], gw, 17, 40000, 9998, b"spoofed ip"),
              ipv4(gw_mac, b["mac"], a["ip"], gw, 17, 40000, 9998, b"spoofed mac"),
              ipv4(gw_mac, a["mac"], a["ip"], gw, 17, 40000, 9998, b"legit")]
    out = h.runner("exec", "atk", "/probe", "frames", "eth0", "15", "100", *frames).stdout  # 1.5 s: past locktime
    assert out == f"sent {15 * len(frames)}\n"
    neigh = json.loads(h.run("ip", "-j", "neigh", "show", b["ip"], "dev", b["bridge"]))
    assert [n.get("lladdr") for n in neigh] == [b["mac"]]
    fdb = json.loads(h.run("bridge", "-j", "fdb", "show", "br", b["bridge"]))
    assert {f["ifname"] for f in fdb if f["mac"] == b["mac"]} <= {b["veth"]}
    assert set(heard(sentinel)) == {f"{a['ip']} legit"}
    assert http_ok(h, b["ip"], 80, tries=5) == "b\n"
    h.runner("rm", "-f", "atk", "peer")
    h.assert_clean()


# -- 7. two stores on one host -----------------------------------------------------------------------------------

def test_a_second_store_leaves_the_first_stores_network_alone(image: Host, neighbour: str) -> None:
    """Store 2 runs containers, prunes and reconciles while store 1's container with a published port is up:
    store 1's veth, address, nft tables and port keep working, store 2's default subnet does not overlap store
    1's (routed on the host), both stores' containers reach a LAN neighbour through the host (neither store's
    forward chain drops the other's), and the other way round: ip_forward stays on for the store still there."""
    one = image
    two = replace(one, root=one.tmp / "store2", containers=[], procs=[])
    pulled = subprocess.run([PY, "-m", "puller", "--root", str(two.root), "pull", one.image], capture_output=True,
                            text=True, timeout=120, env=two.env, cwd=ROOT, check=False)
    assert pulled.returncode == 0, pulled.stderr
    try:
        one.runner("run", "-d", "--name", "web", "--hostname", "web", "-p", "8080:80", one.image, "sh", "-c", HTTPD)
        web = endpoint(one, "bridge", "web")
        assert http_ok(one, "127.0.0.1", 8080) == "web\n"
        tables = set(one.run("nft", "list", "tables").splitlines())
        two.runner("run", "--rm", two.image, "true")
        two.runner("run", "-d", "--name", "other", two.image, "sleep", "300")
        other = endpoint(two, "bridge", "other")
        two.runner("network", "prune")
        assert not ipaddress.ip_network(other["subnet"]).overlaps(ipaddress.ip_network(web["subnet"]))
        assert other["bridge"] != web["bridge"] and other["veth"] != web["veth"]
        _first_store_intact(one, web, tables)
        lan = _serve_on_the_lan(one, neighbour)
        for store, name in ((one, "web"), (two, "other")):
            assert store.runner("exec", name, "sh", "-c", RETRY.format(f"wget -qO- {lan}")).stdout == "lan\n"
        two.runner("rm", "-f", "other")
        two.runner("network", "prune")
        _first_store_intact(one, web, tables)
        # and the other way round: store 1's prune and last container leave store 2's alone
        two.runner("run", "-d", "--name", "other", two.image, "sleep", "300")
        other = endpoint(two, "bridge", "other")
        one.runner("rm", "-f", "web")
        one.runner("network", "prune")
        assert other["veth"] in one.links() and other["bridge"] in one.links()
        assert f"inet {other['ip']}/" in two.runner("exec", "other", "ip", "-o", "-4", "addr", "show", "eth0").stdout
        assert one.run("sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"  # store 2 still forwards
        two.runner("rm", "-f", "other")
    finally:
        ids = two.runner("ps", "-aq", check=False).stdout.split()
        if ids:
            two.runner("rm", "-f", *ids, check=False)
    assert set(one.links()) == {"lo", "lan0"} and "strata" not in one.run("nft", "list", "tables")
    assert one.run("sysctl", "-n", "net.ipv4.ip_forward").strip() == "0"  # put back by the last store out
    for store in (one, two):
        net = store.root / "networks"
        assert sorted(p.name for p in net.rglob("*") if not p.is_dir()) == ["lock"]


def _colliding_root(one: Host) -> Path:
    """A store root next to ONE's whose tag (the first 5 hex digits of the SHA-256 of its real path,
    runner/net/records.py) is ONE's: about 2^20 tries, a second or two. Two stores chosen at random collide with
    a chance of 1 in 2^20; a user who picks the path of a second store (a rootless one, later) at will."""
    want = hashlib.sha256(os.path.realpath(one.root).encode()).hexdigest()[:5]
    base = os.path.realpath(one.tmp)
    for n in range(1 << 26):
        candidate = f"{base}/store-{n}"
        if hashlib.sha256(candidate.encode()).hexdigest()[:5] == want:
            return Path(candidate)
    raise AssertionError("no colliding path found")


def test_a_second_store_with_the_same_tag_leaves_the_first_stores_tables_alone(image: Host) -> None:
    """Store 2's tag is store 1's. Store 2 runs one container on the default network (it may refuse, with one
    line, as its bridge's name is store 1's): store 1's nft tables (its loopback guard, anti-spoofing and DNAT)
    must still be store 1's, and its published port must still answer. A reconcile that deleted the tables by a
    tag-derived name removed them whoever owned them."""
    one = image
    two = replace(one, root=_colliding_root(one), containers=[], procs=[])
    pulled = subprocess.run([PY, "-m", "puller", "--root", str(two.root), "pull", one.image], capture_output=True,
                            text=True, timeout=120, env=two.env, cwd=ROOT, check=False)
    assert pulled.returncode == 0, pulled.stderr
    try:
        one.runner("run", "-d", "--name", "web", "--hostname", "web", "-p", "8080:80", one.image, "sh", "-c", HTTPD)
        assert http_ok(one, "127.0.0.1", 8080) == "web\n"
        before = one.run("nft", "list", "ruleset")
        tried = two.runner("run", "--rm", two.image, "true", check=False)
        assert tried.returncode == 0 or len(tried.stderr.strip().splitlines()) == 1, tried.stderr
        after = one.run("nft", "list", "ruleset")
        assert "127.0.0.0/8 drop" in before
        assert after == before, f"store 2 ({tried.stderr.strip()}) changed store 1's tables:\n{after}"
        assert http_ok(one, "127.0.0.1", 8080, tries=5) == "web\n"
        one.runner("rm", "-f", "web")
        two.runner("network", "prune")
    finally:
        ids = two.runner("ps", "-aq", check=False).stdout.split()
        if ids:
            two.runner("rm", "-f", *ids, check=False)
        one.runner("rm", "-f", "web", check=False)
    assert "strata" not in one.run("nft", "list", "tables")


def test_a_store_killed_as_it_turns_ip_forward_on_still_hands_it_over(host: Host) -> None:
    """Store 1's runner is killed right after it turned ip_forward on, before its tables are written. Store 2 then
    puts a container on its default network; store 1's prune must leave ip_forward on under it (store 1's mark
    says the sysctl is to be put back by the last store out, and that is store 2 now). Unmarked, store 2 took
    the sysctl for the host's own setting ("was 1") and store 1's prune turned it off under store 2's container."""
    two = replace(host, root=host.tmp / "store2")  # the same lists: the fixture cleans up after both
    first, second = host.container("first"), two.container("second")
    stalled = host.driver_popen({"op": "attach", "fault": "forward:hang", "netns": first.netns, "opts": {
        "container_id": first.cid, "name": "first", "hostname": "first"}})
    assert stalled.stdout is not None and json.loads(stalled.stdout.readline()) == {"hang": "forward"}
    assert host.run("sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"
    os.kill(stalled.pid, signal.SIGKILL)  # ip netns exec execs python: this is the runner itself
    stalled.wait()
    first.kill()
    two.attach(second)
    assert host.driver({"op": "prune"}) == {"removed": []}
    assert host.run("sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"  # store 2's container still forwards
    assert "error" not in two.driver({"op": "release", "cid": second.cid})
    host.assert_clean()  # ip_forward back to 0 with the last store out
    two.assert_clean()


@pytest.mark.parametrize("planted", ["symlink", "fifo", "hardlink", "directory"])
def test_the_host_wide_lock_is_not_opened_through_what_was_planted_there(tmp_path: Path, planted: str) -> None:
    """/run/strata-network.lock is opened O_CREAT by every store: one planted as a symlink (to a file that does not
    exist yet: O_CREAT would make it), a FIFO, a hard link or a directory is refused with one line, and what it
    points at is left as it was. Judged on a lock path under a temporary directory, never the machine's."""
    from runner.net import core

    lock, target = tmp_path / "strata-network.lock", tmp_path / "target"
    if planted == "symlink":
        lock.symlink_to(target)
    elif planted == "fifo":
        os.mkfifo(lock)
    elif planted == "hardlink":
        target.write_text("x")
        os.link(target, lock)
    else:
        lock.mkdir()
    with pytest.raises(StrataError) as raised, core.host_locked(lock):
        pass
    assert "\n" not in str(raised.value) and str(lock) in str(raised.value)
    assert not target.exists() or target.read_text() == "x"
    fresh = tmp_path / "fresh.lock"
    with core.host_locked(fresh):
        assert fresh.is_file()


def _serve_on_the_lan(h: Host, neighbour: str) -> str:
    (h.tmp / "site").mkdir()
    (h.tmp / "site" / "index.html").write_text("lan\n")
    h.procs.append(subprocess.Popen(["ip", "netns", "exec", neighbour, PY, "-m", "http.server", "8000", "--bind",
                                     "192.0.2.2", "--directory", str(h.tmp / "site")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return "http://192.0.2.2:8000/"


def _first_store_intact(one: Host, web: dict[str, Any], tables: set[str]) -> None:
    assert web["veth"] in one.links() and web["bridge"] in one.links()
    assert f"inet {web['ip']}/" in one.runner("exec", "web", "ip", "-o", "-4", "addr", "show", "eth0").stdout
    assert tables <= set(one.run("nft", "list", "tables").splitlines())
    assert http_ok(one, "127.0.0.1", 8080, tries=20) == "web\n"
    assert endpoint(one, "bridge", "web") == web
