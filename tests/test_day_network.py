"""inspect's network fields (issue 22), and what ``rename`` changes on a user network, as a user types them: the
runner in a throwaway namespace standing in for the host (tests/test_network.py's fixtures, which delete it and
check that the machine's own namespace is unchanged)."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.test_network import Host, _net_tools, host, image, machine_namespace_unchanged, sh

__all__ = ["_net_tools", "host", "image", "machine_namespace_unchanged"]  # the fixtures, used by name


def inspect(h: Host, key: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(h.runner("inspect", key).stdout)[0]
    return doc


def test_inspect_of_a_default_bridge_container_published_on_8081(image: Host) -> None:
    image.runner("run", "-d", "--name", "web", "-p", "8081:80", image.image, "sleep", "1000")
    doc = inspect(image, "web")
    assert doc["HostConfig"]["NetworkMode"] == "default"  # no --network given: Docker 20.10's word
    assert doc["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": "8081"}]}
    settings = doc["NetworkSettings"]
    mac = image.runner("exec", "web", "cat", "/sys/class/net/eth0/address").stdout.strip()
    assert (settings["IPAddress"], settings["Gateway"], settings["IPPrefixLen"], settings["MacAddress"]) == \
        ("10.88.0.2", "10.88.0.1", 16, mac)
    assert settings["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8081"}]}
    bridge = settings["Networks"]["bridge"]
    network_id = json.loads(image.runner("network", "inspect", "bridge").stdout)[0]["Id"]
    assert (bridge["IPAddress"], bridge["Gateway"], bridge["MacAddress"], bridge["NetworkID"]) == \
        ("10.88.0.2", "10.88.0.1", mac, network_id)
    assert re.fullmatch("[0-9a-f]{64}", bridge["EndpointID"]) and settings["EndpointID"] == bridge["EndpointID"]
    assert "inet 10.88.0.2/16" in sh("nsenter", f"--net={settings['SandboxKey']}", "ip", "-o", "-4", "addr")
    template = "{{.NetworkSettings.IPAddress}} {{(index .NetworkSettings.Networks \"bridge\").IPAddress}}"
    assert image.runner("inspect", "-f", template, "web").stdout == "10.88.0.2 10.88.0.2\n"
    image.runner("stop", "-t", "0", "web")
    stopped = inspect(image, "web")["NetworkSettings"]
    assert (stopped["IPAddress"], stopped["Ports"], stopped["SandboxKey"]) == ("", {}, "")
    assert stopped["Networks"]["bridge"]["IPAddress"] == ""
    assert inspect(image, "web")["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": "8081"}]}
    image.runner("rm", "web")
    image.runner("create", "--name", "named", "--network", "bridge", image.image, "true")
    assert inspect(image, "named")["HostConfig"]["NetworkMode"] == "bridge"  # as given
    image.runner("rm", "named")


def test_inspect_on_a_user_network_and_a_rename_its_peers_see(image: Host) -> None:
    image.runner("network", "create", "--subnet", "10.93.0.0/24", "n1")
    image.runner("run", "-d", "--name", "aa", "--network", "n1", "--network-alias", "svc", image.image, "sleep", "1000")
    image.runner("run", "-d", "--name", "bb", "--network", "n1", image.image, "sleep", "1000")
    doc = inspect(image, "aa")
    assert doc["HostConfig"]["NetworkMode"] == "n1"
    settings = doc["NetworkSettings"]
    assert settings["IPAddress"] == ""  # as Docker's: the top-level fields are the default bridge's alone
    own = settings["Networks"]["n1"]
    assert (own["IPAddress"], own["Gateway"], own["IPPrefixLen"]) == ("10.93.0.2", "10.93.0.1", 24)
    assert own["Aliases"] == ["svc", doc["Id"][:12]] and own["DNSNames"] == ["aa", doc["Id"][:12], "svc"]
    assert "10.93.0.2\taa " in image.runner("exec", "bb", "cat", "/etc/hosts").stdout
    image.runner("rename", "aa", "renamed")
    hosts = image.runner("exec", "bb", "cat", "/etc/hosts").stdout
    line = next(x for x in hosts.splitlines() if x.startswith("10.93.0.2\t"))
    assert line.split("\t")[1].split()[0] == "renamed" and "aa" not in line.split("\t")[1].split(), hosts
    assert inspect(image, "renamed")["NetworkSettings"]["Networks"]["n1"]["DNSNames"][0] == "renamed"
    image.runner("rm", "-f", "renamed", "bb")
    image.runner("network", "rm", "n1")
    image.assert_clean()
