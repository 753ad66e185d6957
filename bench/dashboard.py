#!/usr/bin/env python3
"""The dashboard and API on a big store: a benchmark, not a test.

Seeds a store with 1,000,000 finished jobs (completed over the last day in four queues, 100,000
of them failed in `mail`) and 1,200,000 available `noop` jobs in `default`, starts `spooler serve`
on it with the `default` queue paused, then:

1. times every page and API read the dashboard makes (sequential requests on one keep-alive
   connection, after a warm-up) and prints p50, p95 and max in milliseconds;
2. resumes `default` so the server's worker drains it, and after a few seconds starts a bulk
   retry of the 100,000 failed `mail` jobs (`POST /v1/jobs/bulk`); the drain rate while the
   operation runs is compared with the rate before it, from the jobs' own `finished_at`.

Usage: bench/dashboard.py --bin target/release/spooler --store sqlite|postgres
       [--postgres postgres://postgres@127.0.0.1:5432/test] [--requests 200]
Needs `sqlite3` or `psql` on the PATH to seed. Python's standard library only.
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

FINISHED = 1_000_000
FAILED = 100_000
AVAILABLE = 1_200_000
SPREAD_S = 86_400  # finished jobs are spread over the last day


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sqlite_seed(path, now_s):
    # Ids 1..FINISHED are finished (the last FAILED of them failed in `mail`), then the
    # available jobs, so the newest pages list waiting jobs as a fresh backlog would.
    sql = f"""
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {FINISHED})
    INSERT INTO spooler_jobs (queue, kind, args, state, attempt, max_attempts, run_at, created_at,
                              started_at, finished_at, errors)
    SELECT CASE WHEN i > {FINISHED - FAILED} THEN 'mail' ELSE
                CASE i % 3 WHEN 0 THEN 'default' WHEN 1 THEN 'reports' ELSE 'hooks' END END,
           CASE WHEN i > {FINISHED - FAILED} THEN 'send' ELSE 'noop' END,
           json_object('n', i, 'to', 'user' || (i % 1000) || '@example.com'),
           CASE WHEN i > {FINISHED - FAILED} THEN 'failed' ELSE 'completed' END,
           1, 1, t, t, t + (i % 40) * 1000, t + (i % 40) * 1000 + (i % 97) * 2000,
           CASE WHEN i > {FINISHED - FAILED}
                THEN json_array(json_object('attempt', 1, 'at', '2026-01-01T00:00:00Z',
                                            'message', 'smtp: 550 mailbox ' || (i % 7) || ' unavailable'))
                ELSE '[]' END
      FROM (SELECT i, ({now_s} - {SPREAD_S} + i * {SPREAD_S} / {FINISHED}) * 1000000 AS t FROM n);
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {AVAILABLE})
    INSERT INTO spooler_jobs (queue, kind, args, state, max_attempts, run_at, created_at)
    SELECT 'default', 'noop', '{{}}', 'available', 3, {now_s} * 1000000, {now_s} * 1000000 FROM n;
    """
    subprocess.run(["sqlite3", path], input=sql, text=True, check=True)


def postgres_seed(url, schema, now_s):
    sql = f"""
    INSERT INTO "{schema}".jobs (queue, kind, args, state, attempt, max_attempts, run_at, created_at,
                                 started_at, finished_at, errors)
    SELECT CASE WHEN i > {FINISHED - FAILED} THEN 'mail' ELSE
                (ARRAY['default', 'reports', 'hooks'])[i % 3 + 1] END,
           CASE WHEN i > {FINISHED - FAILED} THEN 'send' ELSE 'noop' END,
           jsonb_build_object('n', i, 'to', 'user' || (i % 1000) || '@example.com'),
           CASE WHEN i > {FINISHED - FAILED} THEN 'failed' ELSE 'completed' END,
           1, 1, t, t, t + (i % 40) * interval '1 ms', t + (i % 40) * interval '1 ms' + (i % 97) * interval '2 ms',
           CASE WHEN i > {FINISHED - FAILED}
                THEN jsonb_build_array(jsonb_build_object('attempt', 1, 'at', '2026-01-01T00:00:00Z',
                     'message', 'smtp: 550 mailbox ' || (i % 7) || ' unavailable'))
                ELSE '[]'::jsonb END
      FROM (SELECT i, to_timestamp({now_s} - {SPREAD_S} + i::float8 * {SPREAD_S} / {FINISHED}) AS t
              FROM generate_series(1, {FINISHED}) i) s;
    INSERT INTO "{schema}".jobs (queue, kind, args, state, max_attempts, run_at, created_at)
    SELECT 'default', 'noop', '{{}}', 'available', 3, to_timestamp({now_s}), to_timestamp({now_s})
      FROM generate_series(1, {AVAILABLE});
    VACUUM ANALYZE "{schema}".jobs;
    """
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url], input=sql, text=True, check=True)


class Server:
    def __init__(self, bin_path, store, port, workdir):
        self.port = port
        self.log = open(os.path.join(workdir, "serve.log"), "w")
        self.proc = subprocess.Popen(
            [bin_path, "serve", "--store", store, "--listen", f"127.0.0.1:{port}",
             "--queue", "default=50"],
            stdout=self.log, stderr=self.log)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                self.get("/healthz")
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"spooler serve did not answer on 127.0.0.1:{port}; see {self.log.name}")

    def request(self, method, path, body=None):
        headers = {"Host": "localhost"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        text = response.read()
        if response.status >= 400:
            raise SystemExit(f"{method} {path}: {response.status} {text[:300]!r}; see {self.log.name}")
        return text

    def get(self, path):
        return self.request("GET", path)

    def json(self, method, path, body=None):
        return json.loads(self.request(method, path, body))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def timings(server, path, n):
    for _ in range(5):
        server.get(path)
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        server.get(path)
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (n - 1))], samples[-1]


def finished_between(args, store, a, b):
    """Jobs of `default` that finished in [a, b) (Unix seconds), from the store itself."""
    if args.store == "sqlite":
        sql = (f"SELECT count(*) FROM spooler_jobs WHERE state = 'completed' AND queue = 'default' "
               f"AND finished_at >= {int(a * 1e6)} AND finished_at < {int(b * 1e6)} AND kind = 'noop' "
               f"AND created_at >= {int(args.now_s * 1e6)}")
        out = subprocess.run(["sqlite3", store["path"], sql], capture_output=True, text=True, check=True)
    else:
        sql = (f"SELECT count(*) FROM \"{store['schema']}\".jobs_done WHERE queue = 'default' "
               f"AND finished_at >= to_timestamp({a}) AND finished_at < to_timestamp({b}) "
               f"AND created_at >= to_timestamp({args.now_s})")
        out = subprocess.run(["psql", "-tA", args.postgres, "-c", sql], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--store", choices=["sqlite", "postgres"], required=True)
    parser.add_argument("--postgres", default=os.environ.get("SPOOLER_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="spooler-dashboard-bench-")
    args.now_s = int(time.time())
    store = {}
    t = time.time()
    if args.store == "sqlite":
        store["path"] = os.path.join(workdir, "jobs.db")
        url = f"sqlite://{store['path']}"
        subprocess.run([args.bin, "migrate", "--store", url], check=True, capture_output=True)
        sqlite_seed(store["path"], args.now_s)
    else:
        store["schema"] = f"dashbench_{os.getpid()}"
        sep = "&" if "?" in args.postgres else "?"
        url = f"{args.postgres}{sep}schema={store['schema']}"
        subprocess.run([args.bin, "migrate", "--store", url], check=True, capture_output=True)
        postgres_seed(args.postgres, store["schema"], args.now_s)
    print(f"seeded {FINISHED + AVAILABLE:,} jobs in {time.time() - t:.0f} s ({args.store})")
    subprocess.run([args.bin, "pause", "default", "--store", url], check=True, capture_output=True)

    server = Server(args.bin, url, free_port(), workdir)
    try:
        t = time.time()
        while True:
            stats = server.json("GET", "/v1/stats")
            if stats["rolled_until"] and stats["rolled_until"][:16] >= time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 90)):
                break
            if time.time() - t > 600:
                raise SystemExit("the history was not rolled up within 10 minutes")
            time.sleep(0.2)
        print(f"first roll-up of a day of history (1,000,000 jobs): {time.time() - t:.1f} s after start")
        newest = server.json("GET", "/v1/jobs?limit=1")["jobs"][0]["id"]
        failed = server.json("GET", "/v1/jobs?state=failed&limit=1")["jobs"][0]["id"]
        paths = [
            ("GET /v1/queues", "/v1/queues"),
            ("overview /", "/"),
            ("/jobs, first page", "/jobs"),
            ("/jobs, 1,000th page", f"/jobs?cursor={newest - 1000 * 50}"),
            ("/jobs?state=failed", "/jobs?state=failed"),
            ("/jobs?queue=mail&state=failed, 1,000th page", f"/jobs?queue=mail&state=failed&cursor={failed - 1000 * 50}"),
            ("/jobs?queue=default&state=available (1,200,000 waiting)", "/jobs?queue=default&state=available"),
            ("/jobs?queue=hooks&state=available (none)", "/jobs?queue=hooks&state=available"),
            ("/jobs?state=running (none)", "/jobs?state=running"),
            ("/jobs?kind=send (the oldest 100,000)", "/jobs?kind=send"),
            ("job page", f"/jobs/{failed}"),
            ("/failed (groups)", "/failed"),
            ("/queues/mail", "/queues/mail"),
            ("/workers", "/workers"),
            ("/stats (minute chart)", "/stats"),
            ("/stats?granularity=hour", "/stats?granularity=hour"),
            ("/stats?granularity=day", "/stats?granularity=day"),
            ("GET /v1/stats", "/v1/stats"),
        ]
        print(f"\n| request ({args.requests} each) | p50 ms | p95 ms | max ms |\n|---|---|---|---|")
        for label, path in paths if args.requests > 0 else []:
            p50, p95, worst = timings(server, path, args.requests)
            print(f"| {label} | {p50:.1f} | {p95:.1f} | {worst:.1f} |", flush=True)

        # The drain, alone and beside a bulk retry of every failed job.
        server.json("POST", "/v1/queues/default/resume")
        time.sleep(2)
        base_from = time.time()
        time.sleep(3)
        base_to = time.time()
        op = server.json("POST", "/v1/jobs/bulk", {"action": "retry", "filter": {"queue": "mail", "state": "failed"}})
        op_from = time.time()
        while op["state"] == "running":
            time.sleep(0.05)
            op = server.json("GET", f"/v1/operations/{op['id']}")
        op_to = time.time()
        time.sleep(2)
        after_from = time.time()
        time.sleep(3)
        after_to = time.time()
        server.json("POST", "/v1/queues/default/pause")
        time.sleep(1)
        base = finished_between(args, store, base_from, base_to) / (base_to - base_from)
        during = finished_between(args, store, op_from, op_to) / (op_to - op_from)
        after = finished_between(args, store, after_from, after_to) / (after_to - after_from)
        print(f"\nbulk retry: {op['affected']:,} of {op['matched']:,} failed jobs retried in {op_to - op_from:.1f} s "
              f"({op['affected'] / (op_to - op_from):,.0f} jobs/s)")
        print(f"drain of `default` (50 slots): {base:,.0f} jobs/s before, {during:,.0f} during the retry "
              f"({during / base:.2f}x), {after:,.0f} after")
        if after == 0:
            print("warning: the backlog ran out before the end: seed more available jobs")
    finally:
        server.stop()
        if args.store == "postgres":
            subprocess.run(["psql", "-q", args.postgres, "-c", f"DROP SCHEMA \"{store['schema']}\" CASCADE"], check=False)
        if not os.environ.get("KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
