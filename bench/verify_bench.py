#!/usr/bin/python3
"""bench/verify_bench.py - POST /auth/verify throughput and latency (issue 14, item 5).

    /usr/bin/python3 bench/verify_bench.py [--bin build-rel/keyward] [--agents 200] [--checks 5]
        [--duration 20s] [--conns 32] [--threads 2] [--runs 3] [--db sqlite|postgres://URL]

1. Starts `keyward serve` on 127.0.0.1:0 over a fresh SQLite file (or the given PostgreSQL
   database, which must be empty), as an administrator makes one account, a service account
   `gateway` with account#verifier, and --agents agents with one internal key each (through
   the HTTP API, like any client).
2. Writes bench/out/verify_rows.txt: the service's token, then one request body per key:
   {"api_key": <key>, "checks": [...]} with --checks checks (the agent's own read and update,
   another agent's read, the account's create_agent, the key's read, cycling), and checks one
   of them by hand (valid, every check answered).
3. Runs wrk --latency with bench/verify_wrk.lua, --runs times, and prints one JSON line per
   run and the medians. wrk, the server and this script share the machine's cores (loopback).
4. With --baseline, each run is followed by the same wrk load of GET /agent_api_keys/{id}
   (bench/svc_wrk.lua, the owner's token: one Check and one row read, the route whose
   figures docs/BENCHMARKS.md records), so that on a shared machine verify's cost can be read
   against a route measured before, under the same conditions.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from conftest import Admin, Client, Server  # noqa: E402  (the e2e harness starts the server)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build-rel", "keyward"))
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--checks", type=int, default=5)
    ap.add_argument("--duration", default="20s")
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--db", default="sqlite")
    ap.add_argument("--baseline", action="store_true")
    args = ap.parse_args()
    os.environ["KEYWARD_BIN"] = os.path.abspath(args.bin)
    out = os.path.join(ROOT, "bench", "out")
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="kw-verify-bench-")
    srv = Server(work, db=None if args.db == "sqlite" else args.db)
    srv.start()
    try:
        adm = Admin(srv, srv.token("root", admin=True))
        acct = "bench"
        adm.touch(("account:" + acct, "admin", "user:owner"),
                  ("account:" + acct, "verifier", "service_account:gateway"))
        owner = Client(srv, srv.token("owner", account=acct))
        keys = []
        for i in range(args.agents):
            a = owner.create_agent("a%05d" % i)
            k = owner.create_key(a["id"], "k", api_key_type="internal")
            keys.append((a["id"], k["id"], k["api_key"]))
        rows = os.path.join(out, "verify_rows.txt")
        with open(rows, "w") as f:
            f.write(srv.token("gateway", principal_type="service_account", ttl=86400) + "\n")
            for i, (aid, kid, secret) in enumerate(keys):
                other = keys[(i + 1) % len(keys)][0]
                pool = [("agent:" + aid, "read"), ("agent:" + aid, "update"),
                        ("agent:" + other, "read"), ("account:" + acct, "create_agent"),
                        ("agent_api_key:" + kid, "read")]
                checks = [{"resource": r, "permission": p}
                          for r, p in (pool[j % len(pool)] for j in range(args.checks))]
                f.write(json.dumps({"api_key": secret, "checks": checks}) + "\n")
        with open(rows) as f:
            tok = f.readline().strip()
            body = f.readline().strip()
        req = urllib.request.Request(srv.url + "/auth/verify", data=body.encode(),
                                     headers={"Authorization": "Bearer " + tok,
                                              "Content-Type": "application/json"})
        ans = json.loads(urllib.request.urlopen(req).read())
        assert ans["valid"] and len(ans["checks"]) == args.checks, ans
        print("dataset: %d agents and keys, %d checks per request; sample answer: %s" %
              (len(keys), args.checks, [c["allowed"] for c in ans["checks"]]), flush=True)
        get_rows = os.path.join(out, "verify_get_rows.txt")
        with open(get_rows, "w") as f:
            tok = srv.token("owner", account=acct, ttl=86400)
            for _, kid, _ in keys:
                f.write("%s\t%s\n" % (kid, tok))

        tick = os.sysconf("SC_CLK_TCK")

        def cpu_s():
            """The server's user + system CPU time so far (seconds)."""
            with open("/proc/%d/stat" % srv.proc.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick

        def wrk(script, extra):
            c0 = cpu_s()
            p = subprocess.run(["wrk", "-t%d" % args.threads, "-c%d" % args.conns,
                                "-d" + args.duration, "--latency", "-s",
                                os.path.join(ROOT, "bench", script), srv.url, "--"] + extra,
                               capture_output=True, text=True, check=True)
            j = json.loads([l for l in p.stdout.splitlines() if l.startswith("{")][-1])
            # CPU the server spent per request: what a request costs whatever else shares
            # the machine (throughput and latency there depend on the neighbours).
            j["server_cpu_us_per_req"] = round((cpu_s() - c0) * 1e6 / max(1, j["requests"]), 1)
            return j

        res, base = [], []
        for r in range(args.runs):
            j = wrk("verify_wrk.lua", [rows])
            j["run"], j["test"] = r + 1, "verify"
            print(json.dumps(j), flush=True)
            res.append(j)
            time.sleep(1)
            if args.baseline:
                j = wrk("svc_wrk.lua", ["get", get_rows])
                j["run"], j["test"] = r + 1, "get"
                print(json.dumps(j), flush=True)
                base.append(j)
                time.sleep(1)
        for name, rs in (("verify", res), ("get by id", base)):
            if rs:
                print("%s median: %.0f req/s, p50 %.2f ms, p99 %.2f ms, server CPU %.1f us/req "
                      "(non-2xx %d)" % (
                          name, statistics.median(x["rps"] for x in rs),
                          statistics.median(x["p50_us"] for x in rs) / 1e3,
                          statistics.median(x["p99_us"] for x in rs) / 1e3,
                          statistics.median(x["server_cpu_us_per_req"] for x in rs),
                          sum(x["non2xx"] for x in rs)))
        m = urllib.request.urlopen(srv.url + "/metrics").read().decode()
        print("\n".join(l for l in m.splitlines() if l.startswith("keyward_verify_total")))
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
