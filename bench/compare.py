#!/usr/bin/env python3
"""Two `spooler` binaries' benchmarks, alternately in the same minutes, beside the plain-SQL limit.

Every change to the hot path should show its cost against the binary before it. This host is
noisy, so one figure means little: each round runs the plain-SQL reference, then both binaries'
`spooler bench --json` (their order swapped every round, so a drift of the host favours neither),
and the table gives each workload's median and range over the rounds, the ratio of the medians
(head/base), and each binary's median as a share of the reference's.

Usage: bench/compare.py --base OLD_BIN --head NEW_BIN [--store sqlite|postgres] [--rounds 3]
       [--jobs 100000] [--concurrency 10] [--workload drain --workload enqueue ...]
       [--reference-dir ../shared/bench] [--postgres postgres://postgres@127.0.0.1:5432/test]

The references: for SQLite `sqlite-raw` (built once into a temporary target), for Postgres
`raw-sql/run.sh` (pgbench). With `--no-reference` they are left out. Standard library only.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

# Which reference figure each workload is measured against.
REFERENCE = {
    "sqlite": {
        ("drain", "no-op"): "drain_100jobs_per_tx",
        ("enqueue", "batch"): "enqueue_batch1000",
        ("enqueue", "single"): "enqueue_single_tx_per_job",
    },
    "postgres": {
        ("drain", "no-op"): "drain_claim100 c=10",
        ("enqueue", "batch"): "enqueue_batch1000 c=1",
        ("enqueue", "single"): "enqueue_single c=10",
    },
}


def spooler_bench(binary, args, store, workdir):
    cmd = [binary, "bench", "--store", store, "--jobs", str(args.jobs),
           "--concurrency", str(args.concurrency), "--json"]
    for w in args.workload:
        cmd += ["--workload", w]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"{binary} bench failed ({out.returncode}): {out.stderr[-2000:]}")
    rows = {}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            rows[(r["workload"], r["mode"])] = r
    return rows


def reference(args, built):
    """The reference's `jobs_per_s` by name, from its RESULT lines."""
    if args.store == "sqlite":
        cmd = [built, str(args.jobs)]
    else:
        cmd = ["bash", os.path.join(args.reference_dir, "raw-sql", "run.sh"), str(min(args.jobs, 20000))]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"the reference failed: {' '.join(cmd)}: {out.stderr[-2000:]}")
    figures = {}
    for line in out.stdout.splitlines():
        m = re.match(r"RESULT \S+ (?:pg )?(\S+)(?: (c=\d+))?.* jobs_per_s=([\d.]+)", line)
        if m:
            name = m.group(1) + (f" {m.group(2)}" if m.group(2) and args.store == "postgres" else "")
            figures[name] = float(m.group(3))
    return figures


def build_sqlite_reference(args):
    target = tempfile.mkdtemp(prefix="sqlite-raw-target-")
    manifest = os.path.join(args.reference_dir, "sqlite-raw", "Cargo.toml")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path", manifest],
                   env={**os.environ, "CARGO_TARGET_DIR": target}, check=True)
    return os.path.join(target, "release", "sqlite-raw")


def add_binary_args(parser):
    """The options every alternating comparison takes: the two binaries and the rounds."""
    parser.add_argument("--base", required=True, help="the binary before the change")
    parser.add_argument("--head", required=True, help="the binary with the change")
    parser.add_argument("--rounds", type=int, default=3)


def binaries(args):
    return {"base": os.path.abspath(args.base), "head": os.path.abspath(args.head)}


def order(round_):
    """Which binary runs first in this round: swapped every round, so a drift favours neither."""
    return ["base", "head"] if round_ % 2 == 0 else ["head", "base"]


def spread(values):
    if not values:
        return "-"
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_binary_args(parser)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--workload", action="append", default=[])
    parser.add_argument("--reference-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "bench"))
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--postgres", default=os.environ.get("SPOOLER_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    if not args.workload:
        args.workload = ["enqueue", "drain"]
    paths = binaries(args)
    built = None
    if not args.no_reference and args.store == "sqlite":
        built = build_sqlite_reference(args)

    figures = {"base": {}, "head": {}, "ref": {}}
    latencies = {"base": {}, "head": {}}
    for round_ in range(args.rounds):
        if not args.no_reference:
            for name, v in reference(args, built).items():
                figures["ref"].setdefault(name, []).append(v)
        for which in order(round_):
            with tempfile.TemporaryDirectory(prefix="spooler-compare-") as workdir:
                store = "sqlite://bench.db" if args.store == "sqlite" else args.postgres
                rows = spooler_bench(paths[which], args, store, workdir)
            for key, r in rows.items():
                figures[which].setdefault(key, []).append(r["jobs_per_sec"])
                if "p99_ms" in r:
                    latencies[which].setdefault(key, []).append((r["p50_ms"], r["p99_ms"]))
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    print(f"\n{args.store}, {args.jobs:,} jobs, concurrency {args.concurrency}, {args.rounds} rounds "
          f"(median and range; jobs/s)\n")
    print("| workload | base | head | head/base | base/ref | head/ref |\n|---|---|---|---|---|---|")
    for key in sorted(set(figures["base"]) | set(figures["head"])):
        base, head = figures["base"].get(key, []), figures["head"].get(key, [])
        ref = figures["ref"].get(REFERENCE[args.store].get(key, ""), [])
        ratio = lambda a, b: f"{statistics.median(a) / statistics.median(b):.2f}" if a and b else "-"
        print(f"| {key[0]} {key[1]} | {spread(base)} | {spread(head)} | {ratio(head, base)} | "
              f"{ratio(base, ref)} | {ratio(head, ref)} |")
    for key in sorted(set(latencies["base"]) | set(latencies["head"])):
        cell = lambda xs: " ".join(f"{p50:.2f}/{p99:.2f}" for p50, p99 in xs) or "-"
        print(f"\n{key[0]} {key[1]} p50/p99 ms per round: base {cell(latencies['base'].get(key, []))}; "
              f"head {cell(latencies['head'].get(key, []))}")
    if figures["ref"]:
        print("\nreference (jobs/s, median): " + ", ".join(
            f"{k} {statistics.median(v):,.0f}" for k, v in sorted(figures["ref"].items())))


if __name__ == "__main__":
    sys.exit(main())
