#!/usr/bin/python3
"""bench/cursor_bench.py - page 1 vs a deep page of GET /agent_api_keys, by page_number and by
cursor, over HTTP (issue 14, item 6).

    build-rel/list_bench --runs 1 /tmp/kw_list_bench.db      # the dataset (bench/list_bench.c)
    /usr/bin/python3 bench/cursor_bench.py [--bin build-rel/keyward] [--db /tmp/kw_list_bench.db]
        [--deep 20] [--limit 50] [--reps 15]

The dataset is list_bench's: agent X with 100,000 keys (and agent Y with 100,000 more in the
same tenant); user u1pct reads every 100th key of X (1%, 1,000 keys: page 20 of 50 is the last
full page), user uall reads all of them. This starts `keyward serve` over that file, mints a
token per user with `keyward token --db`, and times (median of --reps sequential requests, one
connection, wall clock at the client):
  - page_number=1 and page_number=DEEP;
  - cursor= (the first page) and the cursor page DEEP: the X-Next-Cursor of page DEEP-1,
    reached by following the cursors from the first page (not timed; a cursor can be reused).
Each cursor page is compared with the page_number page of the same number. It also reports
the rows each request read (keyward_list_rows_loaded_total{route="/agent_api_keys"}).
"""
import argparse
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import time

import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def rows_loaded(url):
    m = requests.get(url + "/metrics").text
    return int(re.search(r'keyward_list_rows_loaded_total\{route="/agent_api_keys"\} (\d+)',
                         m).group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build-rel", "keyward"))
    ap.add_argument("--db", default="/tmp/kw_list_bench.db")
    ap.add_argument("--deep", type=int, default=20)
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    con = sqlite3.connect(args.db)
    agent = con.execute("SELECT id FROM agents WHERE name = 'X'").fetchone()[0]
    con.close()
    db = "sqlite:" + args.db
    env = dict(os.environ)
    for k in ("KEYWARD_DB", "KEYWARD_JWT_SECRET", "KEYWARD_MASTER_KEY"):
        env.pop(k, None)
    proc = subprocess.Popen([args.bin, "serve", "--db", db, "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        line = proc.stdout.readline().decode().strip()
        assert line.startswith("listening on "), line
        url = line[len("listening on "):]
        print("dataset %s, agent X %s, server %s" % (args.db, agent, url), flush=True)
        print("| caller | page | by | median | min | max | rows read | page size |")
        print("|---|---|---|---|---|---|---|---|")
        for user in ("u1pct", "uall"):
            tok = subprocess.run([args.bin, "token", "--db", db, "--sub", user],
                                 capture_output=True, text=True, check=True, env=env).stdout.strip()
            s = requests.Session()
            s.headers["Authorization"] = "Bearer " + tok
            base = "%s/agent_api_keys?agent_id=%s&limit=%d" % (url, agent, args.limit)
            # the cursor of page DEEP: follow X-Next-Cursor from the first page
            cur, pages = "", {}
            for p in range(1, args.deep + 1):
                r = s.get(base + "&cursor=" + cur)
                assert r.status_code == 200, r.text
                pages[p] = (cur, r.json())
                cur = r.headers.get("X-Next-Cursor", "")
                if not cur and p < args.deep:
                    sys.exit("only %d pages for %s" % (p, user))
            for p in (1, args.deep):
                ref = s.get(base + "&page_number=%d" % p).json()
                assert ref == pages[p][1], "cursor page %d differs from page_number %d" % (p, p)
                for by, q in (("page_number", "&page_number=%d" % p),
                              ("cursor", "&cursor=" + pages[p][0])):
                    t = []
                    r0 = rows_loaded(url)
                    for _ in range(args.reps):
                        a = time.perf_counter()
                        r = s.get(base + q)
                        t.append((time.perf_counter() - a) * 1e3)
                        assert r.status_code == 200 and r.json() == ref
                    rows = (rows_loaded(url) - r0) // args.reps
                    print("| %s | %d | %s | %.2f ms | %.2f | %.2f | %d | %d |" % (
                        user, p, by, statistics.median(t), min(t), max(t), rows, len(ref)),
                        flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


if __name__ == "__main__":
    main()
