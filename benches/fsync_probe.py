#!/usr/bin/env python3
"""How fast this machine's disk makes a small append durable.

Appends SIZE bytes and calls fdatasync, over and over, for SECONDS, in a
file under DIR (removed afterwards), and prints the fdatasync latency
percentiles and the CPU each one cost this process. The journal's `durable`
mode waits for one such fsync per group of records, so this is the floor
under its acknowledgement latency on this machine (docs/loadgen.md).

usage: python3 benches/fsync_probe.py [DIR] [SECONDS] [SIZE]
"""
import os
import sys
import tempfile
import time


def main() -> None:
    directory = sys.argv[1] if len(sys.argv) > 1 else tempfile.gettempdir()
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 1400
    fd, path = tempfile.mkstemp(prefix="fsync-probe.", dir=directory)
    data = b"x" * size
    latencies_ns = []
    cpu_before = os.times()
    end = time.perf_counter() + seconds
    try:
        while time.perf_counter() < end:
            os.write(fd, data)
            started = time.perf_counter_ns()
            os.fdatasync(fd)
            latencies_ns.append(time.perf_counter_ns() - started)
    finally:
        os.close(fd)
        os.unlink(path)
    cpu_after = os.times()
    latencies_ns.sort()
    n = len(latencies_ns)

    def us(p: float) -> float:
        return latencies_ns[min(n - 1, int(p * n))] / 1000

    cpu_s = (cpu_after.system - cpu_before.system) + (cpu_after.user - cpu_before.user)
    print(
        f"fdatasync of {size}-byte appends in {directory}: {n} in {seconds:g} s "
        f"({n / seconds:,.0f}/s); us p50 {us(0.5):,.0f} p90 {us(0.9):,.0f} "
        f"p99 {us(0.99):,.0f} p99.9 {us(0.999):,.0f} max {latencies_ns[-1] / 1000:,.0f}; "
        f"CPU per fdatasync {cpu_s / n * 1e6:,.0f} us"
    )


if __name__ == "__main__":
    main()
