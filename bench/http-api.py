#!/usr/bin/env python3
"""The HTTP API's throughput, for two `spooler` binaries alternately in the same minutes.

Each round starts `spooler serve --no-worker` on a fresh SQLite file for each binary (their order
swapped every round, so a drift of the host favours neither) and drives it with `wrk` (10
connections, 2 threads, on the same host) through three requests:
- `single`: `POST /v1/jobs`, one job per request;
- `batch`: `POST /v1/jobs/batch`, 1,000 jobs per request (reported in jobs/s);
- `get`: `GET /v1/jobs/{id}` of one job.
The table gives each request's median and range over the rounds and the ratio of the medians
(head/base). With one binary, pass it as both.

Usage: bench/http-api.py --base OLD_BIN --head NEW_BIN [--rounds 3] [--seconds 6] [--request single ...]

Needs `wrk` (`apt-get install wrk`). Standard library only, and compare.py beside it.
"""

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from compare import add_binary_args, binaries, order, spread

BATCH = 1000
REQUESTS = ["single", "batch", "get"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def wait_healthy(base_url, server, log_path):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited ({server.returncode}); its log: {log_path}")
        try:
            with urllib.request.urlopen(base_url + "/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the server at {base_url} did not answer /healthz within 60 s; its log: {log_path}")


def wrk(url, seconds, script=None):
    cmd = ["wrk", "-t2", "-c10", f"-d{seconds}s"] + (["-s", script] if script else []) + [url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
    if out.returncode != 0 or not m:
        raise SystemExit(f"wrk failed on {url}: {out.stdout[-1000:]} {out.stderr[-1000:]}")
    if errors:
        raise SystemExit(f"{errors.group(1)} requests to {url} were answered with an error status")
    return float(m.group(1))


def lua_post(path, body):
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = [[{json.dumps(body)}]]\n")
    return path


def measure(binary, args, workdir):
    """One server of `binary` on a fresh file; each request's rate (jobs/s for batches)."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = os.path.join(workdir, "server.log")
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [binary, "serve", "--no-worker", "--store", "sqlite://jobs.db",
             "--listen", f"127.0.0.1:{port}", "--log-format", "json"],
            cwd=workdir, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_healthy(base_url, server, log_path)
        single = lua_post(os.path.join(workdir, "single.lua"), {"kind": "noop", "args": {"n": 1}})
        batch = lua_post(os.path.join(workdir, "batch.lua"),
                         {"jobs": [{"kind": "noop", "args": {"n": i}} for i in range(BATCH)]})
        rates = {}
        for request in args.request:
            if request == "single":
                rates[request] = wrk(base_url + "/v1/jobs", args.seconds, single)
            elif request == "batch":
                rates[request] = BATCH * wrk(base_url + "/v1/jobs/batch", args.seconds, batch)
            else:
                job = post(base_url + "/v1/jobs", {"kind": "noop"})
                rates[request] = wrk(f"{base_url}/v1/jobs/{job['id']}", args.seconds)
        return rates
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_binary_args(parser)
    parser.add_argument("--seconds", type=int, default=6, help="length of each wrk run")
    parser.add_argument("--request", action="append", choices=REQUESTS, default=[])
    args = parser.parse_args()
    if not args.request:
        args.request = REQUESTS
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    paths = binaries(args)
    figures = {"base": {}, "head": {}}
    for round_ in range(args.rounds):
        for which in order(round_):
            with tempfile.TemporaryDirectory(prefix="spooler-http-") as workdir:
                for request, rate in measure(paths[which], args, workdir).items():
                    figures[which].setdefault(request, []).append(rate)
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    print(f"\nHTTP on SQLite, wrk -t2 -c10 -d{args.seconds}s, {args.rounds} rounds (median and range)\n")
    print("| request | unit | base | head | head/base |\n|---|---|---|---|---|")
    labels = {"single": ("POST /v1/jobs", "req/s"), "batch": (f"POST /v1/jobs/batch ({BATCH:,})", "jobs/s"),
              "get": ("GET /v1/jobs/{id}", "req/s")}
    for request in args.request:
        base, head = figures["base"].get(request, []), figures["head"].get(request, [])
        ratio = f"{statistics.median(head) / statistics.median(base):.2f}" if base and head else "-"
        label, unit = labels[request]
        print(f"| {label} | {unit} | {spread(base)} | {spread(head)} | {ratio} |")


if __name__ == "__main__":
    sys.exit(main())
