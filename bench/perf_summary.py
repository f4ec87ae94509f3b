#!/usr/bin/env python3
"""Summarises a `perf record -a -g` file taken by the bench
(CONNTRACER_BENCH_PERF=DIR, one traced run): CPU samples per process, and
the share of the workload's samples (its threads are named `xtask`) spent in
BPF programs and the kernel code that runs them.

usage: bench/perf_summary.py FILE.data"""
import collections
import re
import subprocess
import sys

# BPF programs, their dispatch (tracepoint and cgroup hooks), the helpers
# and map code they call, and the RCU read sections around them.
BPF = re.compile(
    r"bpf_prog_|bpf_trace_run|__cgroup_bpf_run|__bpf_prog_run|bpf_skb_load_bytes"
    r"|htab_|lookup_nulls_elem_raw|bpf_lru|ktime_get_mono_fast|bpf_ringbuf"
    r"|bpf_probe_read|bpf_sk_fullsock|sk_filter|bpf_get_current|bpf_map_lookup"
    r"|__rcu_read_lock|__rcu_read_unlock"
)


def main(path):
    out = subprocess.run(
        ["perf", "report", "-i", path, "--no-children", "--sort", "comm,sym",
         "--stdio", "-g", "none", "--percentage", "absolute"],
        capture_output=True, text=True, check=True).stdout
    comms, syms = collections.Counter(), collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[.\]\s+(\S+)", line)
        if not m:
            continue
        pct, comm, sym = float(m[1]), m[2], m[3]
        comms[comm] += pct
        if comm == "xtask" and BPF.search(sym):
            syms[sym] += pct
    work = comms["xtask"] or 1.0
    # Idle (swapper) is left out: perf starts half a second before the run.
    busy = {c: p for c, p in comms.items() if c != "swapper"}
    total = sum(busy.values()) or 1.0
    top = sorted(busy.items(), key=lambda kv: -kv[1])[:4]
    print("busy CPU samples by process: "
          + ", ".join(f"{c} {p / total * 100:.1f} %" for c, p in top))
    print(f"BPF-related kernel code: {sum(syms.values()) / work * 100:.1f} % of the workload's samples")
    for sym, pct in syms.most_common(8):
        print(f"  {sym:<48} {pct / work * 100:4.1f} %")


if __name__ == "__main__":
    main(sys.argv[1])
