#!/usr/bin/env python3
"""The workload shapes of issue 16 under every allocator, as whole processes.

Builds `benches/shapes_<allocator>.rs` (one binary per allocator, each with
that allocator as `#[global_allocator]`), then runs every shape under every
allocator, REPS times, interleaved: each rep runs each shape once per
allocator, in an order rotated from rep to rep. Each run is its own
process, timed by wall clock, since many shapes are dominated by page
faults and the kernel; `wait4`'s rusage gives its page faults and CPU
time, and the process reports its own peak RSS (VmHWM: `ru_maxrss` of a
child cannot go below the RSS of this Python parent, which exec carries
over). Prints, and writes as markdown, the medians and their ratios to
the best peer (the smallest of mimalloc, jemalloc and snmalloc; lower is
better), and checks that every allocator printed the same checksum.

Usage: python3 benches/shapes.py [--reps N] [--shapes a,b] [--allocators a,b]
                                 [--out FILE.md]

Cargo's target dir is taken from CARGO_TARGET_DIR as usual; the markdown
goes to FILE.md, default `<target dir>/shapes.md`. All ten shapes under
five allocators take about 3 minutes at 5 reps on 2 cores. One shape
under one allocator, e.g. to profile it: build with `cargo bench --no-run
--bench shapes_strata` and run the printed executable with the shape's
name (`... big-objects`). stdlib only.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ALLOCATORS = ["strata", "mimalloc", "jemalloc", "snmalloc", "system"]
PEERS = ["mimalloc", "jemalloc", "snmalloc"]
SHAPES = [
    "service-mix",
    "aligned-mix",
    "big-objects",
    "small-objects",
    "realloc-chains",
    "larson",
    "thread-churn",
    "random-replace",
    "fragment-then-free",
    "idle-after-free",
]
# Shapes whose row is the resident set the program reports after freeing.
MEMORY_SHAPES = {"fragment-then-free", "idle-after-free"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(allocators):
    """`cargo bench --no-run` for each allocator's binary; returns paths."""
    cmd = ["cargo", "bench", "--no-run", "--message-format=json"]
    for a in allocators:
        cmd += ["--bench", f"shapes_{a}"]
    out = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, check=True, text=True)
    exes = {}
    for line in out.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        name = msg.get("target", {}).get("name", "")
        if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
            if name.startswith("shapes_"):
                exes[name[len("shapes_"):]] = msg["executable"]
    missing = [a for a in allocators if a not in exes]
    if missing:
        sys.exit(f"no executable built for {missing}")
    return exes


def run_one(exe, shape):
    """Runs one shape; returns (wall seconds, peak RSS KiB, minor page
    faults, CPU seconds, fields it printed)."""
    start = time.perf_counter()
    proc = subprocess.Popen([exe, shape], stdout=subprocess.PIPE)
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{exe} {shape} failed with status {proc.returncode}")
    fields = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
    peak = int(fields.get("hwm_kb", usage.ru_maxrss))
    cpu = usage.ru_utime + usage.ru_stime
    return secs, peak, usage.ru_minflt, cpu, fields


def fmt_time(s):
    return f"{s * 1e3:.0f} ms" if s < 10 else f"{s:.1f} s"


def fmt_mib(kb):
    return f"{kb / 1024:.0f} MiB" if kb >= 10240 else f"{kb / 1024:.1f} MiB"


def ratio(v, best):
    if v is None or not best:
        return "-"
    r = v / best
    return f"**{r:.2f}**" if r > 1.10 else f"{r:.2f}"


def table(title, shapes, allocators, med, fmt, note):
    """One markdown table: per shape, each allocator's ratio to the best
    peer, then the best peer and its median."""
    lines = [f"**{title}** ({note}; ratio to the best peer, "
             "> 1.10 in bold):", ""]
    head = ["shape"] + allocators + ["best peer", "best peer's median"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|---|" + "---:|" * len(allocators) + "---|---:|")
    for shape in shapes:
        row = med[shape]
        peers = [(row[p], p) for p in PEERS if row.get(p) is not None]
        if not peers:
            continue
        best, who = min(peers)
        cells = [shape] + [ratio(row.get(a), best) for a in allocators]
        cells += [who, fmt(best)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--allocators", default=",".join(ALLOCATORS))
    ap.add_argument("--out")
    args = ap.parse_args()
    shapes = args.shapes.split(",")
    allocators = args.allocators.split(",")
    for s in shapes:
        if s not in SHAPES:
            sys.exit(f"unknown shape {s}; shapes: {' '.join(SHAPES)}")

    exes = build(allocators)
    # (shape, allocator) -> list of (secs, peak KiB, fields)
    runs = {(s, a): [] for s in shapes for a in allocators}
    began = time.perf_counter()
    for rep in range(args.reps):
        for shape in shapes:
            k = rep % len(allocators)
            for a in allocators[k:] + allocators[:k]:
                runs[(shape, a)].append(run_one(exes[a], shape))
            done = ", ".join(
                f"{a} {fmt_time(runs[(shape, a)][-1][0])}" for a in allocators)
            print(f"rep {rep + 1}/{args.reps} {shape}: {done}", file=sys.stderr)
    elapsed = time.perf_counter() - began

    problems = []
    for shape in shapes:
        sums = {r[4].get("checksum") for a in allocators for r in runs[(shape, a)]}
        if len(sums) != 1:
            problems.append(f"{shape}: checksums differ: {sorted(map(str, sums))}")

    def medians(value):
        return {s: {a: statistics.median(value(r) for r in runs[(s, a)])
                    for a in allocators} for s in shapes}

    t_med = medians(lambda r: r[0])
    rss_med = medians(lambda r: r[1])
    mem_shapes = [s for s in shapes if s in MEMORY_SHAPES]
    faults_med = medians(lambda r: r[2])
    cpu_med = medians(lambda r: r[3])

    def after(r):
        return float(r[4].get("rss_after_kb", 0)) / max(float(r[4].get("peak_kb", 1)), 1.0)

    after_med = medians(after)

    out = [f"{args.reps} reps, allocators interleaved within each rep, medians; "
           f"checksums {'differ: ' + '; '.join(problems) if problems else 'equal across allocators'}; "
           f"run took {elapsed:.0f} s.", ""]
    out += table("Wall time", shapes, allocators, t_med, fmt_time, "whole process")
    out.append("")
    out += table("Peak RSS", shapes, allocators, rss_med, fmt_mib, "the process's VmHWM")
    if mem_shapes:
        out += ["", "**Resident after the free, as % of the peak** (what the program "
                "read from /proc/self/statm and VmHWM, median and range over the "
                "reps; lower is better):", ""]
        out.append("| shape | " + " | ".join(allocators) + " |")
        out.append("|---|" + "---:|" * len(allocators))
        for s in mem_shapes:
            cells = []
            for a in allocators:
                vals = [after(r) * 100 for r in runs[(s, a)]]
                cells.append(f"{after_med[s][a] * 100:.0f} % "
                             f"({min(vals):.0f}–{max(vals):.0f})")
            out.append(f"| {s} | " + " | ".join(cells) + " |")
    out += ["", "Medians: wall time / CPU time (user + system) / peak RSS / "
            "minor page faults:", ""]
    out.append("| shape | " + " | ".join(allocators) + " |")
    out.append("|---|" + "---:|" * len(allocators))
    for s in shapes:
        out.append(f"| {s} | " + " | ".join(
            f"{fmt_time(t_med[s][a])} / {fmt_time(cpu_med[s][a])} / "
            f"{fmt_mib(rss_med[s][a])} / {faults_med[s][a] / 1000:.0f} k"
            for a in allocators) + " |")

    text = "\n".join(out) + "\n"
    print(text)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    path = args.out or os.path.join(target, "shapes.md")
    with open(path, "w") as f:
        f.write(text)
    print(f"written to {path}", file=sys.stderr)
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
