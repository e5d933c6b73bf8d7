"""Container networking (runner/net, ``runner network``), under the strict rule of issue 11.

Every test makes a throwaway network namespace that stands in for the host (``strata-t-XXXXXXXX``) and runs the
library and the CLI in it (``ip netns exec``); its "containers" are ``unshare --net`` processes whose namespaces
die with them, as a container's does. All traffic is between addresses made inside those namespaces, or their
127.0.0.1. The fixture deletes every namespace it made, and an autouse fixture checks that the machine's own
namespace kept its links, addresses, routes, rules and ip_forward.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runner.net import files, ipam, nat
from runner.net.model import Endpoint, Network, NetworkConfig, NetworkMode, Published
from shared.errors import StrataError
from tests.tools import runtime_option

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

@pytest.fixture(autouse=True)
def _net_tools() -> None:
    """Not a skip (a test that cannot run fails, as every test here): root and the tools, checked first."""
    assert os.geteuid() == 0, "the network tests need root"
    missing = [t for t in ("nft", "ip", "nsenter", "unshare") if not any(
        os.path.exists(f"{d}/{t}") for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"))]
    assert not missing, f"missing {missing} (scripts/setup installs nftables and util-linux)"

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
print("listening", flush=True)
while True:
    c, addr = s.accept()
    data = c.recv(100)
    c.sendall(b"echo:" + data + b" from:" + addr[0].encode()); c.close()
"""

CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
s.sendall(b"ping"); print(s.recv(200).decode())
"""


def sh(*cmd: str, check: bool = True, timeout: float = 30) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=ENV, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def root_netns_snapshot() -> dict[str, Any]:
    def j(*args: str) -> Any:
        return json.loads(sh("ip", "-j", *args) or "[]")

    return {
        "links": sorted((x["ifname"], x.get("link_type"), tuple(x.get("flags", ()))) for x in j("link", "show")),
        "addrs": sorted((x["ifname"], a["local"], a["prefixlen"]) for x in j("addr", "show")
                        for a in x.get("addr_info", ())),
        "routes": sorted(json.dumps({k: v for k, v in r.items() if k != "expires"}, sort_keys=True)
                         for r in j("route", "show", "table", "all")),
        "nft": sh("nft", "list", "ruleset"),
        "iptables": [ln for ln in sh("iptables-save").splitlines() if not ln.startswith("#")],
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
    }


@pytest.fixture(autouse=True)
def machine_namespace_unchanged() -> Iterator[None]:
    if os.geteuid() != 0:
        yield
        return
    before = root_netns_snapshot()
    yield
    assert root_netns_snapshot() == before, "a network test changed the machine's own namespace"


@dataclass
class Container:
    """An ``unshare --net`` process: its namespace lives exactly as long as it does, as a container's."""

    proc: subprocess.Popen[bytes]
    name: str
    cid: str
    hosts_path: Path

    @property
    def netns(self) -> str:
        return f"/proc/{self.proc.pid}/ns/net"

    def run(self, *cmd: str, check: bool = True) -> str:
        return sh("nsenter", f"--net={self.netns}", *cmd, check=check)

    def popen(self, *cmd: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["nsenter", f"--net={self.netns}", *cmd], stdout=subprocess.PIPE, text=True,
                                env=ENV)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@dataclass
class Host:
    """The stand-in host: a throwaway namespace, a store, and the processes a test started in either."""

    ns: str
    root: Path
    tmp: Path
    containers: list[Container] = field(default_factory=list)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    image: str = ""  # pulled into root by the ``image`` fixture

    def run(self, *cmd: str, check: bool = True) -> str:
        return sh("ip", "netns", "exec", self.ns, *cmd, check=check)

    @property
    def env(self) -> dict[str, str]:
        """The test's own settings file (empty: the runner's defaults, bridge), never the machine's."""
        return {**ENV, "STRATA_CONFIG": str(self.tmp / "settings.json")}

    def runner_cmd(self, *args: str, resolv: Path | None = None) -> list[str]:
        """The runner in the stand-in host's network namespace. nsenter, not ``ip netns exec``: that one also
        remounts /sys for the namespace, which hides /sys/fs/cgroup from the runner. With RESOLV, the runner
        sees that file as the host's /etc/resolv.conf (in a mount namespace of its own)."""
        cmd = [PY, "-m", "runner", "--root", str(self.root), *args]
        if resolv is not None:
            cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                   'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv), *cmd]
        return ["nsenter", f"--net=/run/netns/{self.ns}", *cmd]

    def runner(self, *args: str, check: bool = True, timeout: float = 60,
               resolv: Path | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.runner_cmd(*args, resolv=resolv), capture_output=True, text=True,
                                timeout=timeout, env=self.env, cwd=ROOT, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"runner {' '.join(args)}: {result.stderr.strip()}")
        return result

    def runner_popen(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(self.runner_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env, cwd=ROOT)
        self.procs.append(proc)
        return proc

    def driver_cmd(self, req: dict[str, Any]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, PY, "-m", "tests.net_driver", json.dumps({"root": str(self.root),
                                                                                          **req})]

    def driver(self, req: dict[str, Any]) -> dict[str, Any]:
        out = subprocess.run(self.driver_cmd(req), capture_output=True, text=True, timeout=60, env=ENV, cwd=ROOT,
                             check=False)
        assert out.stdout.strip(), out.stderr
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result

    def driver_popen(self, req: dict[str, Any]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(self.driver_cmd(req), stdout=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
        self.procs.append(proc)
        return proc

    def container(self, name: str) -> Container:
        proc = subprocess.Popen(["unshare", "--net", "sleep", "3600"])
        c = Container(proc, name, f"{name}{os.urandom(30).hex()}"[:64], self.tmp / f"{name}.hosts")
        self.containers.append(c)
        deadline = time.monotonic() + 5
        while os.readlink(c.netns) == os.readlink("/proc/self/ns/net"):  # unshare has not run yet
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return c

    def attach(self, c: Container, network: str = "bridge", **opts: Any) -> dict[str, Any]:
        result = self.driver({"op": "attach", "netns": c.netns, "opts": {
            "container_id": c.cid, "name": c.name, "hostname": c.name, "network": network,
            "hosts_path": str(c.hosts_path), "host_resolv": str(self.tmp / "resolv.conf"), **opts}})
        assert "error" not in result, result["error"]
        c.hosts_path.write_text(result["hosts"])  # as the start path writes it (bind-mounted into the container)
        return result

    def serve(self, c: Container | None, port: int) -> None:
        proc = (c.popen(PY, "-c", SERVER, str(port)) if c else
                subprocess.Popen(["ip", "netns", "exec", self.ns, PY, "-c", SERVER, str(port)], stdout=subprocess.PIPE,
                                 text=True))
        self.procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"

    def links(self) -> dict[str, str]:
        return {x["ifname"]: (x.get("linkinfo") or {}).get("info_kind", "")
                for x in json.loads(self.run("ip", "-d", "-j", "link", "show"))}

    def assert_clean(self) -> None:
        """Nothing of ours left: no link but lo, no address but lo's, no table, ip_forward back, no record."""
        assert set(self.links()) == {"lo"}
        addrs = json.loads(self.run("ip", "-j", "addr", "show"))
        assert [(x["ifname"], a["local"]) for x in addrs for a in x.get("addr_info", ())] == \
            [("lo", "127.0.0.1"), ("lo", "::1")]
        assert "strata" not in self.run("nft", "list", "tables")
        assert self.run("sysctl", "-n", "net.ipv4.ip_forward").strip() == "0"
        net = self.root / "networks"
        assert sorted(str(p.relative_to(net)) for p in net.rglob("*") if not p.is_dir()) in ([], ["lock"])


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    ns = f"strata-t-{os.urandom(4).hex()}"
    sh("ip", "netns", "add", ns)
    h = Host(ns, tmp_path / "store", tmp_path)
    try:
        h.run("ip", "link", "set", "lo", "up")
        (tmp_path / "resolv.conf").write_text("search example.test\nnameserver 127.0.0.53\nnameserver 10.0.0.53\n")
        (tmp_path / "settings.json").write_text("{}")
        yield h
    finally:
        for p in h.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for c in h.containers:
            c.kill()
        if (h.root / "containers").is_dir():  # the runner's containers, whatever the test left running
            ids = h.runner("ps", "-aq", check=False).stdout.split()
            if ids:
                h.runner("rm", "-f", *ids, check=False)
        sh("ip", "netns", "del", ns)


@pytest.fixture
def image(host: Host, test_image: str) -> Host:
    """HOST with the busybox test image pulled into its store (by the puller, from the root namespace's
    127.0.0.1 registry: pulling is not what is tested here)."""
    pulled = subprocess.run([PY, "-m", "puller", "--root", str(host.root), "pull", test_image], capture_output=True,
                            text=True, timeout=120, env=host.env, cwd=ROOT, check=False)
    assert pulled.returncode == 0, pulled.stderr
    host.image = test_image
    return host


def connect(c: Container, target: str, port: int, hosts: Path | None = None) -> str:
    """Connect from inside C; with HOSTS, names resolve through that file bound over /etc/hosts (in a mount
    namespace of the client's own), as in the container."""
    if hosts is None:
        return c.run(PY, "-c", CLIENT, target, str(port)).strip()
    script = f'mount --bind {hosts} /etc/hosts && exec {PY} -c "$0" "$@"'
    return c.run("unshare", "-m", "sh", "-c", script, CLIENT, target, str(port)).strip()


def test_resolv_conf_drops_loopback_nameservers_as_docker_does(tmp_path: Path) -> None:
    host = tmp_path / "resolv.conf"
    host.write_text("search lan\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0\n")
    assert files.resolv_conf(host, ()) == "search lan\noptions edns0\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    host.write_text("nameserver 127.0.0.1\nnameserver 192.0.2.53\n")
    assert files.resolv_conf(host, ()) == "nameserver 192.0.2.53\n"
    assert files.resolv_conf(host, ("9.9.9.9",)) == "nameserver 9.9.9.9\n"


def test_addresses_subnets_and_rules_from_records() -> None:
    net = Network("n", "i" * 64, "10.90.0.0/29", "10.90.0.1", "st-iiiiiiiiiiii", internal=True)
    ep = Endpoint("c", "n", "c", "c", "10.90.0.2", 29, "10.90.0.1", "02:42:0a:5a:00:02", "stvx", "eth0",
                  state="attached", ports=(Published("tcp", "", 8080, 80),))
    assert ipam.allocate(net, [], None) == "10.90.0.2"
    assert ipam.allocate(net, [ep], None) == "10.90.0.3"
    assert ipam.allocate(net, [], "10.90.0.6") == "10.90.0.6"
    for wanted in ("10.90.0.1", "10.90.0.7", "10.90.0.2", "10.91.0.2"):
        with pytest.raises(StrataError):
            ipam.allocate(net, [ep], wanted)
    full = [Endpoint(**{**ep.__dict__, "ip": f"10.90.0.{i}"}) for i in range(2, 7)]
    with pytest.raises(StrataError, match="no free address"):
        ipam.allocate(net, full, None)
    assert ipam.free_subnet(["10.89.0.0/24"], ["10.89.1.0/25"]) == "10.89.2.0/24"
    assert ipam.mac_for("10.88.0.2") == "02:42:0a:58:00:02"
    rules = nat.Ruleset((net,), (ep,), forward_policy_drop=False).render()
    assert "masquerade" in rules and "ip saddr 10.90.0.0/29" not in rules  # internal: nothing leaves
    assert 'iifname "st-iiiiiiiiiiii" drop' in rules and "tcp dport 8080 dnat to 10.90.0.2:80" in rules
    hosts = files.hosts([ep], [], "c", ("gw:host-gateway", "x:192.0.2.9"))
    assert "10.90.0.2\tc\n" in hosts and "10.90.0.1\tgw\n" in hosts and "192.0.2.9\tx\n" in hosts


def test_the_default_bridge_subnet_comes_from_the_settings_files_bip(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from runner.net.core import default_network
    from runner.net.records import Records
    from shared.store.layout import Store

    settings = tmp_path / "config.json"
    monkeypatch.setenv("STRATA_CONFIG", str(settings))
    records = Records(Store(tmp_path / "store"))
    net = default_network(records)
    assert (net.subnet, net.gateway) == ("10.88.0.0/16", "10.88.0.1")
    settings.write_text('{"bip": "10.200.0.1/24"}')
    net = default_network(records)
    assert (net.subnet, net.gateway, net.bridge) == ("10.200.0.0/24", "10.200.0.1", f"strata-{records.tag}")
    settings.write_text('{"bip": "nonsense"}')
    with pytest.raises(StrataError, match="invalid bip"):
        default_network(records)


@pytest.mark.parametrize("xdg", [True, False])
def test_a_non_root_users_own_settings_file_gives_the_default_bridge_its_bip(xdg: bool) -> None:
    """The regression of issue 19: the network read ``bip`` only from ``$STRATA_CONFIG`` or the system file, so a
    user's own file (``$XDG_CONFIG_HOME``, else ``~/.config``) was dropped for it while its ``network`` and
    ``runtime`` counted. Run as nobody, through the network's own lookup; nothing is made but files in a
    temporary directory (the store is never written: an unused bridge's subnet comes from the settings)."""
    with tempfile.TemporaryDirectory(prefix="strata-user-settings-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)
        config_home = base / "cfg" if xdg else base / "home" / ".config"
        (config_home / "strata").mkdir(parents=True)
        for d in (config_home, config_home / "strata", *config_home.parents):
            if d.is_relative_to(base):
                d.chmod(0o755)
        (config_home / "strata" / "config.json").write_text('{"bip": "10.201.0.1/24", "network": "none"}')
        env = {k: v for k, v in ENV.items() if k not in ("STRATA_CONFIG", "XDG_CONFIG_HOME")}
        env["HOME"] = str(base / "home")
        if xdg:
            env["XDG_CONFIG_HOME"] = str(config_home)
        code = ("import sys; from pathlib import Path; from runner.net.core import default_network; "
                "from runner.net.records import Records; from shared.store.layout import Store; "
                "n = default_network(Records(Store(Path(sys.argv[1])))); print(n.subnet, n.gateway)")
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PY, "-c", code,
                              str(base / "store")], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout == "10.201.0.0/24 10.201.0.1\n"


def test_pyroute2_is_imported_only_when_a_network_is_set_up(tmp_path: Path) -> None:
    """The runner's start-up, and rm of a container that never had a network, pay nothing for pyroute2."""
    code = ("import sys; from pathlib import Path; import runner.cli.main, runner.net; "
            "from shared.store.layout import Store; from runner.net.core import release; "
            "release(Store(Path(sys.argv[1])), 'c' * 64); "
            "assert 'pyroute2' not in sys.modules, 'pyroute2 imported'")
    subprocess.run([PY, "-c", code, str(tmp_path)], check=True, env=ENV, cwd=ROOT, timeout=60)
    assert not (tmp_path / "networks").exists()


# -- in throwaway namespaces ------------------------------------------------------------------------------------

def test_two_containers_talk_tcp_by_address_and_by_name_on_a_user_network(host: Host) -> None:
    host.runner("network", "create", "--subnet", "10.91.0.0/24", "app")
    one, two = host.container("one"), host.container("two")
    a = host.attach(one, "app", aliases=["db"], mac="02:aa:bb:cc:dd:ee", dns=["192.0.2.53"],
                    add_hosts=["gw:host-gateway", "ext:192.0.2.80"])
    assert "02:aa:bb:cc:dd:ee" in one.run("ip", "-o", "link", "show", "eth0")
    assert a["resolv_conf"] == "search example.test\nnameserver 192.0.2.53\n"
    assert "10.91.0.1\tgw\n" in a["hosts"] and "192.0.2.80\text\n" in a["hosts"]
    inode = one.hosts_path.stat().st_ino
    b = host.attach(two, "app", aliases=["web"])
    ip_one, ip_two = a["endpoint"]["ip"], b["endpoint"]["ip"]
    assert (ip_one, ip_two) == ("10.91.0.2", "10.91.0.3")
    assert f"{ip_one}\tone db\n" in b["hosts"]
    # one's hosts file was rewritten in place when two came: same inode, so the container's bind mount sees it
    assert f"{ip_two}\ttwo web\n" in one.hosts_path.read_text() and one.hosts_path.stat().st_ino == inode
    host.serve(two, 7000)
    assert connect(one, ip_two, 7000) == f"echo:ping from:{ip_one}"
    assert connect(one, "two", 7000, one.hosts_path) == f"echo:ping from:{ip_one}"
    assert connect(one, "web", 7000, one.hosts_path) == f"echo:ping from:{ip_one}"
    other = host.container("other")  # on the default bridge: it may not open connections into another network
    host.attach(other)
    blocked = subprocess.run(["nsenter", f"--net={other.netns}", PY, "-c", CLIENT, ip_two, "7000"],
                             capture_output=True, text=True, timeout=30, check=False)
    assert blocked.returncode == 1 and "timed out" in blocked.stderr
    host.driver({"op": "release", "cid": other.cid})
    assert "10.91.0.1" in two.run("ip", "route", "show", "default")
    assert two.run("ip", "-j", "link", "show", "eth0").count('"mtu":1500') == 1
    assert host.driver({"op": "release", "cid": two.cid}) == {"ok": True}
    assert "two" not in one.hosts_path.read_text()
    host.driver({"op": "release", "cid": one.cid})
    host.driver({"op": "release", "cid": one.cid})  # idempotent
    assert host.runner("network", "rm", "app").stdout == "app\n"
    host.assert_clean()


def test_none_has_only_lo(host: Host) -> None:
    c = host.container("solo")
    # what the start path does for none
    c.run(PY, "-c", "from runner.linux import loopback_up; loopback_up()")
    links = json.loads(c.run("ip", "-j", "link", "show"))
    assert [x["ifname"] for x in links] == ["lo"] and "UP" in links[0]["flags"]
    out = host.driver({"op": "none", "hostname": "solo"})
    assert "127.0.1.1\tsolo\n" in out["hosts"] and "127.0.0.53" not in out["resolv_conf"]
    host.assert_clean()


def test_published_port_answers_from_the_hosts_loopback_and_bridge_address(host: Host) -> None:
    c = host.container("pub")
    r = host.attach(c, publish=["8080:80", "127.0.0.1:8081:80"], publish_all=True, exposed=["80/tcp", "81/tcp"])
    ports = {(p["host_port"], p["container_port"]) for p in r["endpoint"]["ports"]}
    auto = [hp for hp, cp in ports if cp == 81]
    assert (8080, 80) in ports and (8081, 80) in ports and len(auto) == 1 and 32768 <= auto[0] < 61000
    host.serve(c, 80)
    for address, port in (("127.0.0.1", 8080), ("10.88.0.1", 8080), ("127.0.0.1", 8081)):
        out = host.run(PY, "-c", CLIENT, address, str(port)).strip()
        assert out == "echo:ping from:10.88.0.1", (address, port, out)
    peer = host.container("peer")
    host.attach(peer)
    # a container reaching a published port through the host: itself (hairpin, masqueraded), or a peer
    assert connect(c, "10.88.0.1", 8080) == "echo:ping from:10.88.0.1"
    assert connect(peer, "10.88.0.1", 8080) == "echo:ping from:10.88.0.3"
    host.driver({"op": "release", "cid": peer.cid})
    assert "nameserver 10.0.0.53" in r["resolv_conf"] and "127.0.0.53" not in r["resolv_conf"]
    udp = host.container("udp")
    u = host.attach(udp, publish=["5353:53/udp"])
    assert u["endpoint"]["ip"] == "10.88.0.3"
    echo = udp.popen(PY, "-c", "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                     "s.bind(('0.0.0.0', 53)); print('listening', flush=True); d, a = s.recvfrom(100); "
                     "s.sendto(b'udp:' + d, a)")
    host.procs.append(echo)
    assert echo.stdout is not None and echo.stdout.readline().strip() == "listening"
    assert host.run(PY, "-c", "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                    "s.settimeout(3); s.sendto(b'hi', ('127.0.0.1', 5353)); print(s.recv(100).decode())") == "udp:hi\n"
    host.driver({"op": "release", "cid": udp.cid})
    taken = host.driver({"op": "attach", "netns": host.container("late").netns, "opts": {
        "container_id": "late", "name": "late", "hostname": "late", "publish": ["8080:80"]}})
    assert taken == {"error": "Bind for 0.0.0.0:8080 failed: port is already allocated"}
    host.driver({"op": "release", "cid": c.cid})
    host.assert_clean()


def test_internal_network_has_no_route_out(host: Host) -> None:
    host.run("ip", "addr", "add", "192.0.2.1/32", "dev", "lo")  # an address beyond the bridge (no dummy module)
    host.serve(None, 9000)
    host.runner("network", "create", "--internal", "sealed")
    inner, outer = host.container("inner"), host.container("outer")
    host.attach(inner, "sealed")
    assert inner.run("ip", "route", "show", "default") == ""
    assert "ip saddr 10.89.0.0/24" not in host.run("nft", "list", "ruleset")
    assert host.run("sysctl", "-n", "net.ipv4.ip_forward").strip() == "0"  # nothing needs forwarding
    refused = subprocess.run(["nsenter", f"--net={inner.netns}", PY, "-c", CLIENT, "192.0.2.1", "9000"],
                             capture_output=True, text=True, timeout=30, check=False)
    assert refused.returncode == 1 and "Network is unreachable" in refused.stderr
    host.attach(outer)  # the default bridge, for contrast: out it goes
    assert connect(outer, "192.0.2.1", 9000).startswith("echo:ping from:10.88.0.")
    for c in (inner, outer):
        host.driver({"op": "release", "cid": c.cid})
    host.runner("network", "rm", "sealed")
    host.run("ip", "addr", "del", "192.0.2.1/32", "dev", "lo")
    host.assert_clean()


def test_eight_parallel_attaches_get_eight_distinct_addresses(host: Host) -> None:
    cs = [host.container(f"p{i}") for i in range(8)]
    procs = [host.driver_popen({"op": "attach", "netns": c.netns, "opts": {
        "container_id": c.cid, "name": c.name, "hostname": c.name}}) for c in cs]
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        results.append(json.loads(out.strip().splitlines()[-1]))
    ips = [r["endpoint"]["ip"] for r in results]
    assert len(set(ips)) == 8, ips
    assert sum(1 for kind in host.links().values() if kind == "veth") == 8
    for c in cs:
        host.driver({"op": "release", "cid": c.cid})
    host.assert_clean()


@pytest.mark.parametrize("then", ["prune", "attach"])
def test_kill_9_of_the_runner_then_prune_leaves_nothing(host: Host, then: str) -> None:
    host.runner("network", "create", "front")
    done, midway = host.container("done"), host.container("midway")
    held = host.driver_popen({"op": "attach", "hold": True, "netns": done.netns, "opts": {
        "container_id": done.cid, "name": "done", "hostname": "done", "network": "front", "publish": ["8080:80"]}})
    assert held.stdout is not None
    first = json.loads(held.stdout.readline())["endpoint"]["ip"]
    stalled = host.driver_popen({"op": "attach", "fault": "veth:hang", "netns": midway.netns, "opts": {
        "container_id": midway.cid, "name": "midway", "hostname": "midway"}})
    assert stalled.stdout is not None and json.loads(stalled.stdout.readline()) == {"hang": "veth"}
    assert "eth0" in midway.run("ip", "-o", "link")
    for p in (held, stalled):
        os.kill(p.pid, signal.SIGKILL)  # ip netns exec execs python: this is the runner itself
        p.wait()
    done.kill()  # its PID 1 dies with the runner (parent-death signal)
    # the kernel tears a dead namespace down in a work queue: its veth goes a moment after its last process
    deadline = time.monotonic() + 10
    while sum(1 for kind in host.links().values() if kind == "veth") > 1:  # midway's stays: its namespace lives
        assert time.monotonic() < deadline, host.links()
        time.sleep(0.05)
    if then == "attach":  # the dead runner's address comes back to the next attach: liveness is the veth's
        after = host.container("after")
        assert host.attach(after, "front")["endpoint"]["ip"] == first
        assert [x["ifname"] for x in json.loads(midway.run("ip", "-j", "link"))] == ["lo"]
        host.driver({"op": "release", "cid": after.cid})
    assert host.runner("network", "prune").stdout == "Deleted Networks:\nfront\n"
    assert [x["ifname"] for x in json.loads(midway.run("ip", "-j", "link"))] == ["lo"]
    host.assert_clean()


@pytest.mark.parametrize("step", ["recorded", "bridge", "veth", "configured", "nat"])
def test_a_setup_failing_midway_leaves_nothing(host: Host, step: str) -> None:
    c = host.container("fails")
    out = host.driver({"op": "attach", "fault": f"{step}:raise", "netns": c.netns, "opts": {
        "container_id": c.cid, "name": "fails", "hostname": "fails", "publish": ["8080:80"]}})
    assert out == {"error": f"injected failure after {step}"}
    assert [x["ifname"] for x in json.loads(c.run("ip", "-j", "link"))] == ["lo"]
    host.assert_clean()


def test_connect_and_disconnect_a_running_container(host: Host) -> None:
    from runner.container import record as ct
    from runner.isolation.security import SECCOMP_UNCONFINED, Privileges
    from runner.spec import Spec
    from shared.store.layout import Store

    c = host.container("live")
    store = Store(host.root).ensure()
    rec = ct.record(store, Spec(id=c.cid, name="live", image="x", image_id="sha256:" + "0" * 64, chain_ids=(),
                                args=("sleep",), env=(), cwd="/", user="0", hostname="live", bundle="",
                                privileges=Privileges(seccomp=SECCOMP_UNCONFINED),
                                network=NetworkConfig(mode=NetworkMode.parse("bridge"))))
    rec.record_running(c.proc.pid)
    (rec.dir / "hosts").write_text("old\n")
    host.runner("network", "create", "--subnet", "10.92.0.0/24", "side")
    host.runner("network", "connect", "--alias", "svc", "--ip", "10.92.0.9", "side", "live")
    assert "10.92.0.9/24" in c.run("ip", "-o", "addr", "show", "eth0")
    assert "10.92.0.9\tlive svc\n" in (rec.dir / "hosts").read_text()
    inspect = json.loads(host.runner("network", "inspect", "side").stdout)[0]
    assert inspect["Containers"][c.cid]["IPv4Address"] == "10.92.0.9/24"
    assert json.loads(host.runner("network", "inspect", inspect["Id"][:6]).stdout)[0]["Name"] == "side"
    again = host.runner("network", "connect", "side", "live", check=False)
    assert again.returncode == 125 and again.stderr == "runner: error: container live is already on network side\n"
    assert host.runner("network", "rm", "side", check=False).returncode == 125  # in use
    host.runner("network", "disconnect", inspect["Id"][:12], "live")
    assert c.run("ip", "-o", "link", "show", "eth0", check=False) == ""
    assert "10.92.0.9" not in (rec.dir / "hosts").read_text()
    host.runner("network", "rm", "side")
    host.assert_clean()


def test_a_failed_attach_beside_a_peer_leaves_the_peer_as_it_was(host: Host) -> None:
    host.runner("network", "create", "duo")
    peer, fails = host.container("peer"), host.container("fails")
    host.attach(peer, "duo")
    before = (peer.hosts_path.read_text(), host.run("nft", "list", "ruleset"), sorted(host.links()))
    out = host.driver({"op": "attach", "fault": "nat:raise", "netns": fails.netns, "opts": {
        "container_id": fails.cid, "name": "fails", "hostname": "fails", "network": "duo",
        "hosts_path": str(fails.hosts_path)}})
    assert out == {"error": "injected failure after nat"}
    assert (peer.hosts_path.read_text(), host.run("nft", "list", "ruleset"), sorted(host.links())) == before
    host.driver({"op": "release", "cid": peer.cid})
    host.runner("network", "rm", "duo")
    host.assert_clean()


# -- the runner's containers on networks (runner run/create --network ...), in throwaway namespaces ---------------

HTTPD = "mkdir -p /w && hostname > /w/index.html && exec httpd -f -p 80 -h /w"
RETRY = "for i in $(seq 100); do {} && exit 0; sleep 0.1; done; exit 1"  # until the server is up


def fetch(host: Host, url: str, *run_args: str) -> str:
    """A wget from a new container (--rm) on RUN_ARGS' network, retried until the server answers."""
    out = host.runner("run", "--rm", *run_args, host.image, "sh", "-c", RETRY.format(f"wget -qO- {url}"))
    return out.stdout


def http_get(host: Host, address: str, port: int) -> str:
    """A GET from the stand-in host itself (not a container)."""
    code = ("import sys, urllib.request; print(urllib.request.urlopen(f'http://{sys.argv[1]}:{sys.argv[2]}/', "
            "timeout=5).read().decode(), end='')")
    return host.run(PY, "-c", code, address, str(port))


def test_run_on_the_default_bridge_gets_eth0_an_address_a_route_and_its_files(image: Host) -> None:
    out = image.runner("run", "--rm", "--hostname", "box", "--add-host", "gw:host-gateway", image.image, "sh", "-c",
                       "ip -o -4 addr show eth0; ip route show default; echo ==; cat /etc/hosts; echo ==; "
                       "cat /etc/resolv.conf", resolv=image.tmp / "resolv.conf").stdout
    addr, hosts, resolv = out.split("==\n")
    assert "inet 10.88.0.2/16" in addr and "default via 10.88.0.1 dev eth0" in addr
    assert "10.88.0.2\tbox\n" in hosts and "10.88.0.1\tgw\n" in hosts
    # the host's "search example.test / nameserver 127.0.0.53 / nameserver 10.0.0.53": the loopback one goes
    assert resolv == "search example.test\nnameserver 10.0.0.53\n"
    image.assert_clean()  # --rm: released, and nothing of ours is left on the stand-in host


def test_a_container_of_its_own_user_namespace_on_the_default_bridge(image: Host) -> None:
    """--userns=auto (tests/test_userns_auto.py) on a bridge: the namespace the runner attaches is made in the
    container's user namespace, which can then mount a sysfs of its own (eth0 in it, not the host's links)."""
    from tests.rootless import user

    homes = image.tmp / "homes"
    homes.mkdir(mode=0o755)
    with user(homes, ranges=True) as owner:
        assert owner.subuids is not None
        lease = Path(f"/run/strata-userns/{owner.subuids[0]}")
        try:
            (image.tmp / "settings.json").write_text(json.dumps({"root-auto-userns-user": owner.name}))
            out = image.runner("run", "--rm", "--userns=auto", image.image, "sh", "-c",
                               "ip -o -4 addr show eth0; cat /proc/self/uid_map; ls /sys/class/net").stdout
            assert "inet 10.88.0.2/16" in out, out
            assert f"0 {owner.subuids[0]} 65536" in " ".join(out.split()), out
            assert out.split()[-2:] == ["eth0", "lo"], out
            assert not lease.exists()
        finally:
            lease.unlink(missing_ok=True)
    image.assert_clean()


def test_none_has_only_lo_and_makes_nothing_on_the_host(image: Host) -> None:
    out = image.runner("run", "--rm", "--network", "none", "--hostname", "solo", "--dns", "192.0.2.53", "--add-host",
                       "x:192.0.2.9", image.image, "sh", "-c", "ip -o link; cat /etc/hosts /etc/resolv.conf").stdout
    links = [ln for ln in out.splitlines() if ln[:1].isdigit() and ": " in ln and "link/" in ln]
    assert [ln.split(":")[1].strip() for ln in links] == ["lo"] and "UP" in links[0]
    assert "127.0.1.1\tsolo\n" in out and "192.0.2.9\tx\n" in out and "nameserver 192.0.2.53\n" in out
    assert not (image.root / "networks").exists()
    image.assert_clean()


def test_containers_talk_tcp_by_address_name_and_alias_on_a_user_network(image: Host) -> None:
    image.runner("network", "create", "--subnet", "10.93.0.0/24", "app")
    image.runner("run", "-d", "--name", "srv", "--hostname", "srv-host", "--network", "app", "--network-alias", "web",
                 "--ip", "10.93.0.50", image.image, "sh", "-c", HTTPD)
    for target in ("10.93.0.50", "srv", "web"):
        assert fetch(image, f"http://{target}/", "--network", "app") == "srv-host\n", target
    # the default bridge may not open connections into another network
    blocked = image.runner("run", "--rm", image.image, "wget", "-T", "2", "-qO-", "http://10.93.0.50/", check=False)
    assert blocked.returncode != 0
    image.runner("rm", "-f", "srv")
    image.runner("network", "rm", "app")
    image.assert_clean()


def test_a_published_port_answers_from_the_hosts_loopback_and_bridge_address(image: Host) -> None:
    cid = image.runner("run", "-d", "--name", "pub", "--hostname", "pub", "-p", "8080:80", "-p", "127.0.0.1::80",
                       image.image, "sh", "-c", HTTPD).stdout.strip()
    ports = image.runner("port", "pub").stdout.splitlines()
    assert ports[0] == "80/tcp -> 0.0.0.0:8080" and ports[1].startswith("80/tcp -> 127.0.0.1:")
    ephemeral = int(ports[1].rsplit(":", 1)[1])
    assert "0.0.0.0:8080->80/tcp" in image.runner("ps").stdout
    for address, port in (("127.0.0.1", 8080), ("10.88.0.1", 8080), ("127.0.0.1", ephemeral)):
        deadline = time.monotonic() + 10
        while True:
            try:
                assert http_get(image, address, port) == "pub\n"
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    taken = image.runner("run", "--rm", "-p", "8080:80", image.image, "true", check=False)
    assert taken.returncode == 125 and taken.stderr == \
        "runner: error: Bind for 0.0.0.0:8080 failed: port is already allocated\n"
    image.runner("rm", "-f", cid)
    image.assert_clean()


def test_publish_all_publishes_the_images_exposed_ports_on_free_host_ports(image: Host) -> None:
    image.runner("run", "--network", "none", "--name", "base", image.image, "true")
    image.runner("commit", "-c", "EXPOSE 80 5353/udp", "base", "localhost/exposed:1")
    image.runner("rm", "base")
    image.runner("run", "-d", "--name", "all", "-P", "-p", "8080:80", "--hostname", "all", "localhost/exposed:1",
                 "sh", "-c", HTTPD)
    ports = sorted(image.runner("port", "all").stdout.splitlines())
    assert ports[1] == "80/tcp -> 0.0.0.0:8080" and ports[0].startswith("5353/udp -> 0.0.0.0:"), ports
    assert 32768 <= int(ports[0].rsplit(":", 1)[1]) < 61000 and len(ports) == 2  # 80 was published by -p
    refused = image.runner("run", "--rm", "--network", "none", "-P", image.image, "true", check=False)
    assert refused.returncode == 125 and "port publishing" in refused.stderr
    image.runner("rm", "-f", "all")
    image.assert_clean()


def test_eight_parallel_runs_get_eight_distinct_addresses(image: Host) -> None:
    procs = [image.runner_popen("run", "-d", "--name", f"p{i}", image.image, "sleep", "300") for i in range(8)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    seen = {image.runner("exec", f"p{i}", "ip", "-o", "-4", "addr", "show", "eth0").stdout.split()[3]
            for i in range(8)}
    assert len(seen) == 8, seen
    inspect = json.loads(image.runner("network", "inspect", "bridge").stdout)[0]["Containers"]
    assert {c["IPv4Address"] for c in inspect.values()} == seen
    image.runner("rm", "-f", *(f"p{i}" for i in range(8)))
    image.assert_clean()


def test_kill_9_of_the_runner_then_network_prune_leaves_nothing(image: Host) -> None:
    image.runner("network", "create", "front")
    proc = image.runner_popen("run", "--name", "victim", "--network", "front", "-p", "8080:80", image.image,
                              "sleep", "300")
    deadline = time.monotonic() + 30
    while "victim" not in image.runner("ps").stdout:
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # nsenter execs the runner: this is the runner itself
    proc.wait()
    deadline = time.monotonic() + 10  # PID 1 dies with its runner; the kernel then tears the namespace down
    while any(kind == "veth" for kind in image.links().values()):
        assert time.monotonic() < deadline, image.links()
        time.sleep(0.05)
    assert image.runner("network", "prune").stdout == "Deleted Networks:\nfront\n"
    image.assert_clean()
    image.runner("rm", "victim")


def test_a_run_whose_network_setup_fails_leaves_nothing(image: Host) -> None:
    failed = image.runner("run", "--rm", "--mac-address", "02:00:00:00:00:01", "--network", "nosuch", image.image,
                          "true", check=False)
    assert failed.returncode == 125 and failed.stderr == "runner: error: network nosuch not found\n"
    # the bridge's name taken by something else: the attach fails after its record, address and namespace
    from runner.net.records import Records
    from shared.store.layout import Store

    bridge = f"strata-{Records(Store(image.root)).tag}"
    image.run("ip", "link", "add", bridge, "type", "veth", "peer", "name", "other0")
    failed = image.runner("run", "--rm", image.image, "true", check=False)
    assert failed.returncode == 125 and failed.stderr == \
        f"runner: error: cannot set up bridge {bridge}: it exists and is not a bridge\n"
    assert image.run("ip", "-o", "-4", "addr", "show", bridge) == ""
    image.run("ip", "link", "del", bridge)
    # attached, then the command cannot start: released all the same, in the foreground and detached
    missing = image.runner("run", "--rm", image.image, "/nosuch", check=False)
    assert missing.returncode == 127 and missing.stderr.count("\n") == 1, missing.stderr
    image.runner("run", "-d", "--name", "busy", "-p", "8080:80", image.image, "sleep", "300")
    taken = image.runner("run", "-d", "--rm", "-p", "8080:80", image.image, "true", check=False)
    assert taken.returncode == 125 and "port is already allocated" in taken.stderr
    image.runner("rm", "-f", "busy")
    assert image.runner("ps", "-aq").stdout == ""
    image.assert_clean()


def test_an_internal_network_has_no_route_out_and_connect_disconnect_a_running_container(image: Host) -> None:
    image.run("ip", "addr", "add", "192.0.2.1/32", "dev", "lo")  # an address beyond the bridges
    image.serve(None, 9000)
    image.runner("network", "create", "--internal", "sealed")
    out = image.runner("run", "--rm", "--network", "sealed", image.image, "sh", "-c",
                       "ip route; wget -T 2 -qO- http://192.0.2.1:9000/ || echo unreachable").stdout
    assert "default" not in out and out.endswith("unreachable\n")
    image.runner("run", "-d", "--name", "live", image.image, "sleep", "300")
    image.runner("network", "connect", "--alias", "svc", "sealed", "live")
    links = image.runner("exec", "live", "ip", "-o", "-4", "addr").stdout
    assert "eth0" in links and "eth1" in links and "10.89.0." in links
    assert " svc\n" in image.runner("exec", "live", "cat", "/etc/hosts").stdout
    image.runner("network", "disconnect", "sealed", "live")
    assert "eth1" not in image.runner("exec", "live", "ip", "-o", "link").stdout
    refused = image.runner("run", "-d", "--name", "private", "--network", "none", image.image, "sleep", "300")
    assert refused.returncode == 0
    denied = image.runner("network", "connect", "sealed", "private", check=False)
    assert denied.returncode == 125 and "network mode none" in denied.stderr
    image.runner("rm", "-f", "live", "private")
    image.runner("network", "rm", "sealed")
    image.run("ip", "addr", "del", "192.0.2.1/32", "dev", "lo")
    image.assert_clean()


def test_a_stopped_container_starts_again_on_its_network_with_a_fresh_endpoint(image: Host) -> None:
    refused = image.runner("create", "--name", "again", "--network-alias", "x", image.image, "true", check=False)
    assert refused.returncode == 125 and "user defined networks only" in refused.stderr
    cid = image.runner("create", "--name", "again", "-p", "8080:80", image.image, "ip", "-o", "-4", "addr", "show",
                       "eth0").stdout.strip()
    spec = json.loads(image.runner("inspect", "again").stdout)[0]["Spec"]
    assert json.loads(spec["annotations"]["io.strata.network"])["mode"] == "bridge"
    assert {"type": "network"} in spec["linux"]["namespaces"]
    for _ in range(2):
        assert "inet 10.88.0.2/16" in image.runner("start", "-a", "again").stdout
        image.assert_clean()  # exited: released, though the container stays
    image.runner("rm", cid)


def test_host_network_sees_the_hosts_interfaces(image: Host) -> None:
    image.run("ip", "link", "add", "tst0", "type", "veth", "peer", "name", "tst1")
    out = image.runner("run", "--rm", "--network", "host", image.image, "ip", "-o", "link").stdout
    assert "tst0" in out and "tst1" in out and "eth0" not in out
    image.run("ip", "link", "del", "tst0")
    image.assert_clean()


def test_container_network_shares_the_other_containers_namespace(image: Host) -> None:
    image.runner("run", "-d", "--name", "owner", image.image, "sh", "-c", HTTPD)
    out = image.runner("run", "--rm", "--network", "container:owner", image.image, "sh", "-c",
                       "ip -o -4 addr show eth0; hostname; " + RETRY.format("wget -qO- http://127.0.0.1/")).stdout
    lines = out.splitlines()
    assert "inet 10.88.0.2/16" in lines[0]
    assert lines[1] == lines[2]  # owner's hostname, served by owner's httpd on the shared loopback
    image.runner("rm", "-f", "owner")
    image.assert_clean()


@pytest.mark.parametrize("runtime", ["runc", "crun", "runner-oci"])
def test_a_bridge_container_under_an_oci_runtime_gets_its_address(image: Host, runtime: str) -> None:
    runtime = runtime_option(runtime)  # runner-oci by this checkout's path
    out = image.runner("run", "--rm", "--runtime", runtime, image.image, "ip", "-o", "-4", "addr", "show",
                       "eth0").stdout
    assert "inet 10.88.0.2/16" in out
    image.assert_clean()
    image.runner("run", "-d", "--name", "owner", "--runtime", runtime, image.image, "sh", "-c", HTTPD)
    shared = image.runner("run", "--rm", "--runtime", runtime, "--network", "container:owner", image.image, "sh",
                          "-c", RETRY.format("wget -qO- http://127.0.0.1/")).stdout
    assert shared == image.runner("exec", "owner", "hostname").stdout
    alone = image.runner("run", "--rm", "--runtime", runtime, "--network", "none", image.image, "ip", "-o",
                         "link").stdout
    assert "lo:" in alone and "eth0" not in alone
    image.runner("rm", "-f", "owner")
    image.assert_clean()
