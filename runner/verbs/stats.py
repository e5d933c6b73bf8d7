"""``runner stats [-a] [--no-stream] [--no-trunc] [--format ...] [CONTAINER...]``: Docker's resource usage table
(``CONTAINER ID  NAME  CPU %  MEM USAGE / LIMIT  MEM %  NET I/O  BLOCK I/O  PIDS``), computed as Docker 20.10's
daemon and CLI compute it:

* CPU %: the container's CPU time over the host's in one interval, times the online CPUs (the CLI's
  calculateCPUPercentUnix; the host's time is /proc/stat's first line, as the daemon's getSystemCPUUsage);
* memory: usage minus inactive file pages (``total_inactive_file`` on cgroup v1, ``inactive_file`` on v2, the
  CLI's calculateMemUsageUnixNoCache), of the limit, which is the group's, or the host's memory when that is less
  (the daemon's machineMemory cap);
* NET I/O: bytes received / sent on the container's interfaces but ``lo`` (/proc/PID1/net/dev, in its namespace);
* BLOCK I/O: bytes read / written (blkio's io_service_bytes, v2's io.stat); PIDS: pids.current (tasks).

Everything is read from the container's cgroup, found through PID 1 (:func:`runner.verbs.top.groups_of`). Without
root a container has no cgroup: its processes are those of its pid namespace and the figures are their sums from
/proc (CPU time, resident memory, which counts a page shared by two processes twice, threads, /proc/PID/io), the
limit the host's memory. A container that is not running shows zeros, as Docker's.

Without ``--no-stream`` the table is redrawn each second (as Docker's: clear screen, home) until Ctrl-C, which
ends it with 130 and no message, as the signal ends Docker's CLI.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from runner.container.record import Container, all_containers, find
from runner.verbs.top import groups_of, pids_of
from shared import format as fmt
from shared.cli import Interrupted
from shared.store.layout import Store

DEFAULT_FORMAT = ("{{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t"
                  "{{.PIDs}}")
HEADERS = {"Container": "CONTAINER", "ID": "CONTAINER ID", "Name": "NAME", "CPUPerc": "CPU %",
           "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O", "BlockIO": "BLOCK I/O",
           "PIDs": "PIDS"}
INTERVAL = 1.0


@dataclass(frozen=True)
class Sample:
    """One reading of a container (all zeros: not running)."""

    cpu_ns: int = 0  # the container's CPU time
    system_ns: int = 0  # the host's, as /proc/stat counts it
    online_cpus: int = 0
    memory: int = 0  # usage minus inactive file
    limit: int = 0
    rx: int = 0
    tx: int = 0
    read: int = 0
    written: int = 0
    pids: int = 0


def cpu_percent(before: Sample, now: Sample) -> float:
    """Docker's calculateCPUPercentUnix."""
    cpu_delta = now.cpu_ns - before.cpu_ns
    system_delta = now.system_ns - before.system_ns
    if system_delta > 0 and cpu_delta > 0:
        return cpu_delta / system_delta * now.online_cpus * 100.0
    return 0.0


def memory_no_cache(usage: int, stat: dict[str, int]) -> int:
    """Docker 20.10's calculateMemUsageUnixNoCache: usage less the inactive file pages (v1's total_inactive_file,
    else v2's inactive_file), when they are less than it."""
    inactive = stat.get("total_inactive_file", stat.get("inactive_file"))
    return usage - inactive if inactive is not None and inactive < usage else usage


def row(container: Container, given: str, before: Sample, now: Sample, trunc: bool) -> dict[str, str]:
    """One container as Docker's stats formatter context (its fields, as strings)."""
    return {
        "Container": given, "ID": container.id[:12] if trunc else container.id, "Name": container.name,
        "CPUPerc": f"{cpu_percent(before, now):.2f}%",
        "MemUsage": f"{fmt.bytes_size(now.memory)} / {fmt.bytes_size(now.limit)}",
        "MemPerc": f"{now.memory / now.limit * 100 if now.limit else 0.0:.2f}%",
        "NetIO": f"{fmt.human_size(now.rx, 3)} / {fmt.human_size(now.tx, 3)}",
        "BlockIO": f"{fmt.human_size(now.read, 3)} / {fmt.human_size(now.written, 3)}",
        "PIDs": str(now.pids),
    }


def host_memory() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def system_ns() -> int:
    """The daemon's getSystemCPUUsage: /proc/stat's cpu line (user to softirq), in nanoseconds."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return sum(int(v) for v in fields[1:8]) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _read(path: Path | None) -> str:
    try:
        return path.read_text() if path is not None else ""
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def _int(path: Path | None, default: int = 0) -> int:
    text = _read(path).strip()
    return int(text) if text.isdigit() else default


def _keyed(text: str) -> dict[str, int]:
    """``KEY VALUE`` lines (memory.stat, cpu.stat)."""
    return {k: int(v) for k, _, v in (line.partition(" ") for line in text.splitlines()) if v.strip().isdigit()}


def net_io(pid: int) -> tuple[int, int]:
    """Bytes received and sent on every interface but ``lo`` of PID's network namespace."""
    rx = tx = 0
    for line in _read(Path(f"/proc/{pid}/net/dev")).splitlines()[2:]:
        name, _, counters = line.partition(":")
        values = counters.split()
        if name.strip() != "lo" and len(values) >= 9:
            rx, tx = rx + int(values[0]), tx + int(values[8])
    return rx, tx


def block_io(groups: dict[str, Path]) -> tuple[int, int]:
    """Bytes read and written: v2's io.stat (rbytes, wbytes), v1's blkio io_service_bytes (Read, Write lines),
    the CFQ file when it counts anything, else the throttle one (as runc's libcontainer reads them)."""
    read = written = 0
    if "v2" in groups:
        for line in _read(groups["v2"] / "io.stat").splitlines():
            for item in line.split()[1:]:
                key, _, value = item.partition("=")
                read += int(value) if key == "rbytes" else 0
                written += int(value) if key == "wbytes" else 0
        return read, written
    blkio = groups.get("blkio")
    for name in ("blkio.io_service_bytes_recursive", "blkio.throttle.io_service_bytes_recursive"):
        for line in _read(blkio / name if blkio else None).splitlines():
            parts = line.split()
            if len(parts) == 3:
                read += int(parts[2]) if parts[1].lower() == "read" else 0
                written += int(parts[2]) if parts[1].lower() == "write" else 0
        if read or written:
            break
    return read, written


def sample(container: Container) -> Sample:
    """A reading of a running container from its cgroup (from /proc without one); zeros when it is not running."""
    fd = container.verified_pidfd()
    if fd is None:
        return Sample()
    os.close(fd)
    pid1 = container.state().pid
    groups = groups_of(pid1)
    host = host_memory()
    rx, tx = net_io(pid1) if "network" in container.spec.namespaces else (0, 0)
    if not groups:
        return _from_proc(pids_of(container, pid1), host, rx, tx)
    v2 = groups.get("v2")
    memory, cpu, pids = (v2, v2, v2) if v2 else (groups.get("memory"), groups.get("cpuacct"), groups.get("pids"))
    usage = _int(memory / ("memory.current" if v2 else "memory.usage_in_bytes") if memory else None)
    limit = _int(memory / ("memory.max" if v2 else "memory.limit_in_bytes") if memory else None, host)
    if v2:
        cpu_ns = _keyed(_read(v2 / "cpu.stat")).get("usage_usec", 0) * 1000
    else:
        cpu_ns = _int(cpu / "cpuacct.usage" if cpu else None)
    read, written = block_io(groups)
    return Sample(cpu_ns, system_ns(), len(os.sched_getaffinity(0)),
                  memory_no_cache(usage, _keyed(_read(memory / "memory.stat" if memory else None))),
                  min(limit, host) if host else limit, rx, tx, read, written,
                  _int(pids / "pids.current" if pids else None))


def _from_proc(pids: Sequence[int], host: int, rx: int, tx: int) -> Sample:
    """Without a cgroup: the sums over the processes of the container's pid namespace (module doc)."""
    ticks, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    cpu = memory = threads = read = written = 0
    for pid in pids:
        stat = _read(Path(f"/proc/{pid}/stat")).rpartition(")")[2].split()
        if len(stat) > 21:  # fields from 3 on: utime 14, stime 15, num_threads 20, rss 24
            cpu += (int(stat[11]) + int(stat[12])) * 1_000_000_000 // ticks
            threads += int(stat[17])
            memory += int(stat[21]) * page
        io = _keyed(_read(Path(f"/proc/{pid}/io")).replace(":", ""))
        read, written = read + io.get("read_bytes", 0), written + io.get("write_bytes", 0)
    return Sample(cpu, system_ns(), len(os.sched_getaffinity(0)), memory, host, rx, tx, read, written, threads)


def _chosen(store: Store, keys: Sequence[str], all_: bool) -> list[tuple[Container, str]]:
    """The containers named (each as given), or every running one (every one with -a), newest first."""
    if keys:
        return [(find(store, key), key) for key in keys]
    return [(c, c.id[:12]) for c in all_containers(store) if all_ or c.state().status == "running"]


def table(store: Store, keys: Sequence[str], all_: bool, format_text: str | None, trunc: bool,
          before: dict[str, Sample]) -> list[str]:
    """One frame: each container read ``INTERVAL`` after BEFORE (taken now when it has no reading yet)."""
    chosen = _chosen(store, keys, all_)
    missing = [c for c, _ in chosen if c.id not in before]
    for c in missing:
        before[c.id] = sample(c)
    if missing:
        time.sleep(INTERVAL)
    now = {c.id: sample(c) for c, _ in chosen}
    rows = [row(c, given, before[c.id], now[c.id], trunc) for c, given in chosen]
    before.clear()
    before.update(now)
    return fmt.listing(format_text, rows, DEFAULT_FORMAT, HEADERS)


def stats(store: Store, keys: Sequence[str], all_: bool = False, no_stream: bool = False,
          format_text: str | None = None, trunc: bool = True,
          write: Callable[[str], object] = sys.stdout.write) -> int:
    """``runner stats``: one table with --no-stream, else a table a second until Ctrl-C (exit 130, silent)."""
    before: dict[str, Sample] = {}
    if no_stream:
        write("".join(f"{line}\n" for line in table(store, keys, all_, format_text, trunc, before)))
        return 0
    try:
        while True:
            started = time.monotonic()
            lines = table(store, keys, all_, format_text, trunc, before)
            write("\033[2J\033[H" + "".join(f"{line}\n" for line in lines))
            sys.stdout.flush()
            time.sleep(max(0.0, INTERVAL - (time.monotonic() - started)))
    except (Interrupted, KeyboardInterrupt):
        return 130
