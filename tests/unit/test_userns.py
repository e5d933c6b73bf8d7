"""The ids a user without root may map (shared/userns.py), where a user's store and settings live, and the
unprivileged overlay format: pure logic, no namespace is entered here."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import userns
from shared.layer.whiteout import OVERLAY, USER_OVERLAY
from shared.settings import locate
from shared.store import layout
from shared.userns import IdRange, mapping_for, subordinate_ranges

SUBUID = """\
# a comment, then lines by name and by number
alice:100000:65536
1001:300000:10
bob:notanumber:5
carol:200000:0
alice:500000:100
broken line
"""


def test_ranges_are_found_by_name_and_by_number_and_bad_lines_are_skipped() -> None:
    assert subordinate_ranges(SUBUID, "alice", 1001) == [(100000, 65536), (300000, 10), (500000, 100)]
    assert subordinate_ranges(SUBUID, "bob", 1002) == []
    assert subordinate_ranges(SUBUID, "carol", 1003) == []  # a zero count grants nothing


def test_a_full_mapping_puts_the_user_at_0_and_the_ranges_after_it() -> None:
    m = mapping_for(1001, 1001, "alice", SUBUID, "alice:100000:65536\n")
    assert m.full
    assert m.uids == (IdRange(0, 1001, 1), IdRange(1, 100000, 65536), IdRange(65537, 300000, 10),
                      IdRange(65547, 500000, 100))
    assert m.gids == (IdRange(0, 1001, 1), IdRange(1, 100000, 65536))
    assert m.size == 65537
    assert m.uids[1].line() == "1 100000 65536"


@pytest.mark.parametrize("subgid", ["", "someone:1:2\n"])
def test_ranges_on_one_side_only_map_the_user_alone(subgid: str) -> None:
    """Owners mapped for uids but not gids would put files in groups that do not exist inside."""
    m = mapping_for(1001, 1001, "alice", SUBUID, subgid)
    assert not m.full
    assert m.uids == m.gids == (IdRange(0, 1001, 1),)
    assert m.size == 1


def test_root_and_users_get_their_own_store_and_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STRATA_ROOT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(layout, "host_uid", lambda: 1001)
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")  # the XDG spec: a relative path is invalid
    assert layout.default_root() == tmp_path / ".local/share/strata"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert layout.default_root() == tmp_path / "data/strata"
    assert layout.store_overlay() is USER_OVERLAY
    monkeypatch.setenv("STRATA_ROOT", "/elsewhere")
    assert layout.default_root() == Path("/elsewhere")
    monkeypatch.setattr(layout, "host_uid", lambda: 0)
    monkeypatch.delenv("STRATA_ROOT")
    assert layout.default_root() == Path("/var/lib/strata")
    assert layout.store_overlay() is OVERLAY
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    assert locate(env, 1001) == tmp_path / "cfg/strata/config.json"
    assert locate(env, 0) == Path("/etc/strata/config.json")


def test_nothing_entered_means_the_hosts_own_ids() -> None:
    assert userns.entered() is None
    import os

    assert userns.host_uid() == os.geteuid()


def test_the_unprivileged_format_reads_user_xattrs_and_makes_no_devices() -> None:
    assert (OVERLAY.privileged, OVERLAY.mount_options, OVERLAY.opaque_xattr) == (True, (), "trusted.overlay.opaque")
    assert (USER_OVERLAY.privileged, USER_OVERLAY.mount_options, USER_OVERLAY.opaque_xattr) == \
        (False, ("userxattr",), "user.overlay.opaque")
    assert USER_OVERLAY.escape_xattr("user.overlay.opaque") == "user.overlay.overlay.opaque"
    assert USER_OVERLAY.escape_xattr("trusted.overlay.opaque") == "trusted.overlay.opaque"


def test_the_run_directory_must_be_the_users_own_private_directory(tmp_path: Path) -> None:
    import os

    from shared.errors import StrataError
    from shared.rundir import check_private, run_dir

    me = os.geteuid()
    made = run_dir(me, {"XDG_RUNTIME_DIR": str(tmp_path)})
    assert made == tmp_path / "strata" and (made.stat().st_mode & 0o777) == 0o700
    (tmp_path / "link").symlink_to(made)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "open").mkdir(mode=0o755)
    (tmp_path / "open").chmod(0o755)
    for name, why in (("link", "(a symlink)"), ("fifo", "is not a directory"), ("open", "open to others (mode 0755)")):
        with pytest.raises(StrataError, match="refusing the run-time directory") as info:
            check_private(tmp_path / name, me, is_dir=True)
        assert why in str(info.value)
    with pytest.raises(StrataError, match=f"belongs to uid {me}, not to this user"):
        check_private(made, me + 1, is_dir=True)
    check_private(made, me, is_dir=True)  # its own: taken
