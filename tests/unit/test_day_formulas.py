"""The pure formulas of ``runner stats`` and ``runner top`` (runner/verbs): Docker 20.10's CPU % and memory
without the page cache, go-units' BytesSize, the stats row's wording, and Docker's parsing of ps output."""

from __future__ import annotations

import pytest

from runner.verbs.stats import Sample, cpu_percent, memory_no_cache
from runner.verbs.top import parse_ps
from shared.errors import StrataError
from shared.format import bytes_size, human_size


def test_cpu_percent_is_the_containers_share_of_the_hosts_time_times_its_cpus() -> None:
    before = Sample(cpu_ns=1_000_000_000, system_ns=100_000_000_000, online_cpus=2)
    # one second of the container's CPU time while the host's two CPUs counted two seconds: one CPU's worth
    now = Sample(cpu_ns=2_000_000_000, system_ns=102_000_000_000, online_cpus=2)
    assert cpu_percent(before, now) == pytest.approx(100.0)
    half = Sample(cpu_ns=1_500_000_000, system_ns=102_000_000_000, online_cpus=2)
    assert cpu_percent(before, half) == pytest.approx(50.0)
    assert cpu_percent(before, before) == 0.0  # no time passed
    assert cpu_percent(now, before) == 0.0  # a counter that went back (a restart): Docker shows 0, not < 0


def test_memory_is_usage_less_inactive_file_on_v1_and_v2() -> None:
    assert memory_no_cache(10_000, {"total_inactive_file": 3_000, "inactive_file": 9_000}) == 7_000  # v1 first
    assert memory_no_cache(10_000, {"inactive_file": 4_000}) == 6_000  # v2
    assert memory_no_cache(10_000, {"total_inactive_file": 12_000}) == 10_000  # not less than usage: usage
    assert memory_no_cache(10_000, {}) == 10_000


@pytest.mark.parametrize(("size", "text"), [(0, "0B"), (1023, "1023B"), (1024, "1KiB"), (1536, "1.5KiB"),
                                            (64 * 1024 * 1024, "64MiB"), (8_053_063_680, "7.5GiB"),
                                            (1_234_567, "1.177MiB")])
def test_bytes_size_is_go_units_bytes_size(size: int, text: str) -> None:
    assert bytes_size(size) == text


def test_net_and_block_io_use_human_size_with_precision_3() -> None:
    assert human_size(0, 3) == "0B" and human_size(1_234, 3) == "1.23kB" and human_size(999_999, 3) == "1e+03kB"


PS = """UID          PID    PPID  C STIME TTY          TIME CMD
root           1       0  0 07:44 ?        00:02:16 /sbin/init splash
root         300       1  0 07:44 ?        00:00:00 sh -c sleep 1001 & sleep 1002 & wait
root         301     300  0 07:44 ?        00:00:00 sleep 1001
root         999       1  0 07:44 ?        00:00:00 other
"""


def test_parse_ps_keeps_the_containers_rows_with_the_command_whole() -> None:
    titles, rows = parse_ps(PS, [300, 301])
    assert titles == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert rows == [["root", "300", "1", "0", "07:44", "?", "00:00:00", "sh -c sleep 1001 & sleep 1002 & wait"],
                    ["root", "301", "300", "0", "07:44", "?", "00:00:00", "sleep 1001"]]


def test_parse_ps_keeps_a_kept_processs_thread_lines_and_needs_a_pid_column() -> None:
    threads = "  PID   LWP CMD\n  300   300 a\n    -   301 t\n  999   999 b\n    -  1000 u\n"
    assert parse_ps(threads, [300])[1] == [["300", "300", "a"], ["-", "301", "t"]]
    with pytest.raises(StrataError, match="Couldn't find PID field in ps output"):
        parse_ps("USER COMMAND\nroot x\n", [1])
