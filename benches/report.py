#!/usr/bin/env python3
"""Markdown table of the `alloc` criterion bench: time per allocator and
the ratios strata/mimalloc and strata/jemalloc (lower is better).

Usage: python3 benches/report.py [TARGET_DIR] [--mean]

TARGET_DIR is the cargo target dir used for `cargo bench` (it contains
`criterion/`), or the `criterion` directory itself; default: target/bench,
then target. Uses criterion's median estimate unless --mean is given.
stdlib only.
"""

import json
import os
import sys

ALLOCATORS = ["strata", "mimalloc", "jemalloc", "snmalloc", "system"]


def find_criterion_dir(arg):
    candidates = [arg] if arg else ["target/bench", "target"]
    for c in candidates:
        for d in (c, os.path.join(c, "criterion")):
            if os.path.basename(os.path.normpath(d)) == "criterion" and os.path.isdir(d):
                return d
    sys.exit(f"no criterion directory under {candidates}")


def fmt_time(ns):
    if ns is None:
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    r = a / b
    return f"**{r:.2f}**" if r > 1.10 else f"{r:.2f}"


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    stat = "mean" if "--mean" in sys.argv else "median"
    root = find_criterion_dir(args[0] if args else None)

    # (group, parameter) -> {allocator: ns}
    table = {}
    order = []
    for dirpath, _dirs, files in sorted(os.walk(root)):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
            continue
        try:
            with open(os.path.join(dirpath, "benchmark.json")) as f:
                meta = json.load(f)
            with open(os.path.join(dirpath, "estimates.json")) as f:
                est = json.load(f)
        except (OSError, ValueError):
            continue
        func = meta.get("function_id") or ""
        if func not in ALLOCATORS:
            continue
        key = (meta["group_id"], meta.get("value_str") or "")
        if key not in table:
            table[key] = {}
            order.append(key)
        table[key][func] = est[stat]["point_estimate"]

    if not table:
        sys.exit(f"no allocator benchmarks found under {root}")

    print(f"Time per iteration (criterion {stat}); ratios > 1.10 in bold "
          "(strata slower).\n")
    head = ["workload"] + ALLOCATORS + ["strata/mimalloc", "strata/jemalloc"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" + "---:|" * (len(head) - 1))
    def natural(key):
        group, param = key
        return (group, (0, int(param), "") if param.isdigit() else (1, 0, param))

    for key in sorted(order, key=natural):
        row = table[key]
        name = f"{key[0]}/{key[1]}" if key[1] else key[0]
        cells = [name] + [fmt_time(row.get(a)) for a in ALLOCATORS]
        cells.append(ratio(row.get("strata"), row.get("mimalloc")))
        cells.append(ratio(row.get("strata"), row.get("jemalloc")))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
