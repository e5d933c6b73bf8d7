"""--userns=auto's pure parts (runner/isolation/idmap.py): blocks from /etc/subuid texts, the ids commit maps
back, and the runtime-spec's mappings both ways."""

from __future__ import annotations

import pytest

from runner.isolation import idmap
from shared.errors import StrataError
from shared.userns import IdBlock


def test_blocks_are_whole_65536s_of_each_range_paired_uid_with_gid() -> None:
    subuid = "containers:100000:131072\nother:300000:65536\ncontainers:500000:1000\n"
    subgid = "containers:200000:65536\ncontainers:600000:65536\n"
    assert idmap.blocks(subuid, subgid, "containers", 999) == [(100000, 200000), (165536, 600000)]
    assert idmap.blocks(subuid, "", "containers", 999) == []
    assert idmap.blocks("999:100000:65536\n", "999:7:65536\n", "containers", 999) == [(100000, 7)]


def test_ids_map_back_inside_the_block_and_are_refused_outside() -> None:
    block = IdBlock(100000, 200000)
    assert block.back(100000, 200000) == (0, 0)
    assert block.back(100042, 200043) == (42, 43)
    for uid, gid in ((99999, 200000), (165536, 200000), (100000, 265536), (0, 0)):
        with pytest.raises(StrataError, match="outside the container's ids"):
            block.back(uid, gid)


def test_the_runtime_specs_mappings_round_trip() -> None:
    block = IdBlock(100000, 200000)
    doc = idmap.to_oci(block)
    assert doc["uidMappings"] == [{"containerID": 0, "hostID": 100000, "size": 65536}]
    assert idmap.from_oci(doc) == block
    assert idmap.from_oci({}) is None
