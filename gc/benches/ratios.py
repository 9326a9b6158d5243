#!/usr/bin/env python3
"""Median times and ratios of the issue-15 shapes from criterion's output.

Usage: gc/benches/ratios.py [CRITERION_DIR]   (default:
$CARGO_TARGET_DIR/criterion, else target/criterion)

For every shape group, each crate's median over the `Rc` row of the same
group (`rc_refcell`, or `rc_weak_back` for the strong-back list); for the
old-young groups, each crate's median with old objects over its median
without. Both benches use the same ids, so give the second run its own
directory to compare allocators, e.g.
`CRITERION_HOME=$CARGO_TARGET_DIR/criterion-strata cargo bench -p strata-gc
--bench gc_on_strata` and then `ratios.py $CARGO_TARGET_DIR/criterion-strata`.
The peak-RSS rows are printed by the bench itself.

The sync groups of `benches/sync.rs` (issue 19) follow, when present: each
crate's median over `arc` (`arc_weak_back/<threads>` for the cycles, per
thread count), and each crate over the best peer of the same row
(`dumpster`, `gcmodule`). Their peak-RSS and pause rows are printed by that
bench.
"""

import json
import os
import sys
from collections import defaultdict

SHAPES = (
    "refcell_tree_build_walk_drop",
    "weak_parent_tree_build_walk_up_drop",
    "weak_upgrade_walk_leaf_to_root",
    "refcell_dlist_weak_back",
    "refcell_dlist_strong_back",
    "fan_in_100k_clones_of_one",
)
BASELINES = ("rc_refcell", "rc_weak_back")
ORDER = BASELINES + ("strata_gc", "rust_cc", "dumpster", "bacon_rajan_cc", "gc")
SYNC_ORDER = ("arc", "arc_weak_back", "strata_gc", "dumpster", "gcmodule")
SYNC_PEERS = ("dumpster", "gcmodule")


def order(ident):
    crate = ident.split("/")[0]
    return ORDER.index(crate) if crate in ORDER else len(ORDER)


def fmt(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:8.3f} {unit}"
    return f"{ns:8.1f} ns"


def load(root):
    rows = defaultdict(dict)  # group -> id -> median ns
    for dirpath, _, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            median = json.load(f)["median"]["point_estimate"]
        ident = bench["function_id"] or ""
        if bench.get("value_str"):
            ident = f"{ident}/{bench['value_str']}"
        rows[bench["group_id"]][ident] = median
    return rows


def main():
    default = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "criterion")
    rows = load(sys.argv[1] if len(sys.argv) > 1 else default)
    for group in SHAPES:
        if group not in rows:
            continue
        ids = rows[group]
        base = next((ids[b] for b in BASELINES if b in ids), None)
        print(group)
        for ident, ns in sorted(ids.items(), key=lambda kv: order(kv[0])):
            ratio = f"{ns / base:6.2f}x rc" if base else ""
            print(f"  {ident:<16} {fmt(ns)}  {ratio}")
    for group in sorted(g for g in rows if g.startswith("old_young_refcell_")):
        print(group)
        per_crate = defaultdict(dict)
        for ident, ns in rows[group].items():
            crate, _, old = ident.rpartition("/old/")
            per_crate[crate][int(old)] = ns
        for crate, by_old in sorted(per_crate.items(), key=lambda kv: order(kv[0])):
            none, many = by_old.get(0), max(by_old.items())[1]
            olds = max(by_old)
            ratio = f"{many / none:6.2f} (old {olds} / none)" if none and olds else ""
            print(f"  {crate:<16} none {fmt(none)}  old {fmt(many)}  {ratio}")
    sync_groups(rows)


def sync_groups(rows):
    """`sync_tree_shared_walk` and `sync_cycles_threads/<crate>/<threads>`."""
    for group in ("sync_tree_shared_walk", "sync_cycles_threads"):
        if group not in rows:
            continue
        by_threads = defaultdict(dict)  # threads ("" for none) -> crate -> ns
        for ident, ns in rows[group].items():
            crate, _, threads = ident.partition("/")
            by_threads[threads][crate] = ns
        print(group)
        for threads, crates in sorted(by_threads.items(), key=lambda kv: int(kv[0] or 0)):
            base = crates.get("arc") or crates.get("arc_weak_back")
            peers = [crates[p] for p in SYNC_PEERS if p in crates]
            best = min(peers) if peers else None
            for crate, ns in sorted(
                crates.items(),
                key=lambda kv: SYNC_ORDER.index(kv[0]) if kv[0] in SYNC_ORDER else 99,
            ):
                ident = f"{crate}/{threads}" if threads else crate
                ratio = f"{ns / base:6.2f}x arc" if base else ""
                peer = f"  {ns / best:6.2f}x best peer" if best and crate == "strata_gc" else ""
                print(f"  {ident:<20} {fmt(ns)}  {ratio}{peer}")


if __name__ == "__main__":
    main()
