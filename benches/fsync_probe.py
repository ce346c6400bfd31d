#!/usr/bin/env python3
"""How fast this machine's disk makes a small write durable.

Writes SIZE bytes and calls fdatasync, over and over, for SECONDS, in a
file under DIR (removed afterwards), and prints the fdatasync latency
percentiles, the CPU each one cost this process and the bytes the disk
wrote per fdatasync (from /proc/diskstats, all disks; 0 if unreadable).
It does so twice: appending (each fdatasync also commits a new file size)
and writing over zeros kept 1/2 to 1 MiB ahead of the data, as the journal
writes its segments (docs/journal.md, "Zeros ahead"). The journal's
`durable` mode waits for one such fsync per group of records, so this is
the floor under its acknowledgement latency on this machine
(docs/loadgen.md).

usage: python3 benches/fsync_probe.py [DIR] [SECONDS] [SIZE]
"""
import os
import sys
import tempfile
import time

AHEAD = 1 << 20  # journal::SEGMENT_PREALLOC_BYTES
ZEROS = bytes(64 << 10)


def disk_bytes_written() -> int:
    """Sectors written by whole disks (no partitions), in bytes."""
    total = 0
    try:
        with open("/proc/diskstats", encoding="ascii") as f:
            for line in f:
                parts = line.split()
                name = parts[2]
                if name.startswith(("loop", "ram", "zram")):
                    continue
                if name.startswith("nvme"):
                    if "p" in name[4:]:
                        continue  # a partition of an NVMe disk
                elif name[-1].isdigit():
                    continue  # a partition (sda1, vda2)
                total += int(parts[9]) * 512
    except OSError:
        return 0
    return total


def probe(directory: str, seconds: float, size: int, zeros_ahead: bool) -> str:
    fd, path = tempfile.mkstemp(prefix="fsync-probe.", dir=directory)
    data = b"x" * size
    latencies_ns = []
    pos = allocated = 0
    cpu_before = os.times()
    disk_before = disk_bytes_written()
    end = time.perf_counter() + seconds
    try:
        while time.perf_counter() < end:
            os.pwrite(fd, data, pos)
            pos += size
            if zeros_ahead and allocated < pos + AHEAD // 2:
                at = max(allocated, pos)
                while at < pos + AHEAD:
                    at += os.pwrite(fd, ZEROS[: pos + AHEAD - at], at)
                allocated = at
            started = time.perf_counter_ns()
            os.fdatasync(fd)
            latencies_ns.append(time.perf_counter_ns() - started)
    finally:
        os.close(fd)
        os.unlink(path)
    cpu_after = os.times()
    disk = disk_bytes_written() - disk_before
    latencies_ns.sort()
    n = len(latencies_ns)

    def us(p: float) -> float:
        return latencies_ns[min(n - 1, int(p * n))] / 1000

    cpu_s = (cpu_after.system - cpu_before.system) + (cpu_after.user - cpu_before.user)
    how = "over zeros" if zeros_ahead else "appending "
    return (
        f"{how}: fdatasync of {size}-byte writes in {directory}: {n} in {seconds:g} s "
        f"({n / seconds:,.0f}/s); us p50 {us(0.5):,.0f} p90 {us(0.9):,.0f} "
        f"p99 {us(0.99):,.0f} p99.9 {us(0.999):,.0f} max {latencies_ns[-1] / 1000:,.0f}; "
        f"CPU per fdatasync {cpu_s / n * 1e6:,.0f} us; disk writes {disk / n / 1024:,.1f} KiB each"
    )


def main() -> None:
    directory = sys.argv[1] if len(sys.argv) > 1 else tempfile.gettempdir()
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 1400
    for zeros_ahead in (False, True):
        print(probe(directory, seconds, size, zeros_ahead), flush=True)


if __name__ == "__main__":
    main()
