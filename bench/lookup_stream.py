#!/usr/bin/python3
"""bench/lookup_stream.py - a LookupResources of N results streamed over the /v1 gateway
(issue 15 item 3, issue 12 item 4): results/s, time to the first 100 lines, and the server's
RSS growth during the stream (constant memory).

    /usr/bin/python3 bench/lookup_stream.py [--bin build-rel/keyward] [--n 1000000] [--runs 3]

Starts `keyward serve` over a new SQLite file in a temporary folder, adds
`definition doc { relation viewer: user  permission view = viewer }` to its schema,
writes N doc:dNNNNNNN#viewer@user:reader through /v1/relationships/write (1,000 a request),
then streams POST /v1/permissions/resources (doc, view, user:reader) --runs times on one
connection, reading the chunked JSON lines as they arrive. Run 1 parses every line and checks
that exactly the N ids come in order; later runs count lines without parsing them (Python's
JSON parsing would otherwise be what is measured). Prints each run and the medians.
"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DOC = "definition doc {\n  relation viewer: user\n  permission view = viewer\n}\n"


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def stream(host, port, token, n, pid, parse):
    body = json.dumps({"resourceObjectType": "doc", "permission": "view",
                       "subject": {"object": {"objectType": "user", "objectId": "reader"}}})
    req = ("POST /v1/permissions/resources HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
           "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
           % (token, len(body), body)).encode()
    s = socket.create_connection((host, port))
    rss0 = rss_kb(pid)
    peak = rss0
    t0 = time.monotonic()
    s.sendall(req)
    buf = bytearray()
    first100 = None
    lines = 0
    last_id = ""
    ok = True
    pending = b""
    head_done = False
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
        if not head_done:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                continue
            head_done = True
            buf = buf[i + 4:]
        # de-chunk what is complete
        while True:
            eol = buf.find(b"\r\n")
            if eol < 0:
                break
            size = int(buf[:eol], 16)
            if len(buf) < eol + 2 + size + 2:
                break
            data = bytes(buf[eol + 2:eol + 2 + size])
            del buf[:eol + 2 + size + 2]
            if size == 0:
                s.close()
                return dict(total=time.monotonic() - t0, first100=first100, lines=lines,
                            ok=ok and lines == n, rss_growth_kb=peak - rss0)
            if not parse:
                before = lines
                lines += data.count(b"\n")
                if before < 100 <= lines:
                    first100 = time.monotonic() - t0
                if lines // 100000 != before // 100000:
                    peak = max(peak, rss_kb(pid))
                continue
            pending += data
            parts = pending.split(b"\n")
            pending = parts.pop()
            for p in parts:
                if not p:
                    continue
                x = json.loads(p)["result"]["resourceObjectId"]
                if x <= last_id:
                    ok = False
                last_id = x
                lines += 1
                if lines == 100:
                    first100 = time.monotonic() - t0
                if lines % 100000 == 0:
                    peak = max(peak, rss_kb(pid))
    s.close()
    return dict(total=time.monotonic() - t0, first100=first100, lines=lines, ok=False,
                rss_growth_kb=peak - rss0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build-rel", "keyward"))
    ap.add_argument("--n", type=int, default=1000000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "k.db")
        env = dict(os.environ, KEYWARD_JWT_SECRET="lookup-stream-bench-secret-0123456789")
        out = open(os.path.join(tmp, "out.txt"), "w+")
        proc = subprocess.Popen([a.bin, "serve", "--db", "sqlite:" + db, "--listen",
                                 "127.0.0.1:0"], stdout=out, stderr=subprocess.DEVNULL, env=env)
        try:
            url = None
            for _ in range(300):
                out.seek(0)
                m = re.search(r"^listening on (\S+)", out.read(), re.M)
                if m:
                    url = m.group(1)
                    break
                time.sleep(0.1)
            assert url, "the server did not start"
            token = subprocess.check_output([a.bin, "token", "--db", "sqlite:" + db, "--sub",
                                             "bench", "--admin"], env=env).decode().strip()
            h = {"Authorization": "Bearer " + token}
            sess = requests.Session()
            cur = sess.post(url + "/v1/schema/read", json={}, headers=h).json()["schemaText"]
            r = sess.post(url + "/v1/schema/write", json={"schema": cur + "\n" + DOC}, headers=h)
            assert r.status_code == 200, r.text
            t0 = time.monotonic()
            for i in range(0, a.n, 1000):
                ups = [{"operation": "OPERATION_TOUCH", "relationship": {
                    "resource": {"objectType": "doc", "objectId": "d%08d" % k},
                    "relation": "viewer",
                    "subject": {"object": {"objectType": "user", "objectId": "reader"}}}}
                    for k in range(i, min(i + 1000, a.n))]
                r = sess.post(url + "/v1/relationships/write", json={"updates": ups}, headers=h)
                assert r.status_code == 200, r.text
            print("wrote %d relationships in %.1f s" % (a.n, time.monotonic() - t0))
            host, port = url.split("//")[1].split(":")
            runs = []
            for i in range(a.runs):
                # run 1 parses every line and checks the order; the others count lines, so
                # that the client's JSON parsing does not bound the figure
                x = stream(host, int(port), token, a.n, proc.pid, i == 0)
                assert x["ok"], x
                runs.append(x)
                print("run %d: %d lines in %.3f s = %.0f results/s, first 100 lines %.2f ms, "
                      "server RSS growth %d KiB" % (i + 1, x["lines"], x["total"],
                                                    x["lines"] / x["total"],
                                                    x["first100"] * 1e3, x["rss_growth_kb"]))
            print(json.dumps({"bench": "lookup_stream", "n": a.n, "runs": a.runs,
                              "median_results_per_s": statistics.median(
                                  r["lines"] / r["total"] for r in runs),
                              "median_first100_ms": statistics.median(
                                  r["first100"] * 1e3 for r in runs),
                              "max_rss_growth_kb": max(r["rss_growth_kb"] for r in runs)}))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
