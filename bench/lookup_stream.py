#!/usr/bin/python3
"""bench/lookup_stream.py - a LookupResources of N results streamed over the /v1 gateway
(issue 15 item 3, issue 12 item 4): results/s, time to the first line and the first 100
lines, and the server's RSS growth during the stream (constant memory).

    /usr/bin/python3 bench/lookup_stream.py [--bin build-rel/keyward] [--n 1000000] [--runs 3]
        [--reader build-rel/stream_read] [--db FILE]

Starts `keyward serve` over a new SQLite file in a temporary folder, adds
`definition doc { relation viewer: user  permission view = viewer }` to its schema,
writes N doc:dNNNNNNN#viewer@user:reader through /v1/relationships/write (1,000 a request),
then streams POST /v1/permissions/resources (doc, view, user:reader) --runs times with
bench/stream_read.c (a C reader: every line checked structurally, ids in strictly increasing
order, every 1,000th line parsed whole, exactly N lines; a Python reader was most of what
was measured before). Prints each run and the medians (stream_read's JSON line).
--db FILE keeps the database: a later run with the same FILE and N skips the writes.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DOC = "definition doc {\n  relation viewer: user\n  permission view = viewer\n}\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build-rel", "keyward"))
    ap.add_argument("--n", type=int, default=1000000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--reader", default=None, help="stream_read (default: next to --bin)")
    ap.add_argument("--db", default=None, help="keep the database in FILE (reused if there)")
    a = ap.parse_args()
    reader = a.reader or os.path.join(os.path.dirname(os.path.abspath(a.bin)), "stream_read")
    assert os.access(reader, os.X_OK), "no reader at %s (build bench/stream_read.c)" % reader
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.abspath(a.db) if a.db else os.path.join(tmp, "k.db")
        fresh = not os.path.exists(db)
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
            if "definition doc " not in cur:
                r = sess.post(url + "/v1/schema/write", json={"schema": cur + "\n" + DOC},
                              headers=h)
                assert r.status_code == 200, r.text
            t0 = time.monotonic()
            for i in range(0, a.n if fresh else 0, 1000):
                ups = [{"operation": "OPERATION_TOUCH", "relationship": {
                    "resource": {"objectType": "doc", "objectId": "d%08d" % k},
                    "relation": "viewer",
                    "subject": {"object": {"objectType": "user", "objectId": "reader"}}}}
                    for k in range(i, min(i + 1000, a.n))]
                r = sess.post(url + "/v1/relationships/write", json={"updates": ups}, headers=h)
                assert r.status_code == 200, r.text
            if fresh:
                print("wrote %d relationships in %.1f s" % (a.n, time.monotonic() - t0))
            hostport = url.split("//")[1]
            rc = subprocess.call([reader, hostport, "--token", token, "--expect", str(a.n),
                                  "--runs", str(a.runs), "--pid", str(proc.pid)])
            assert rc == 0, "the stream failed its checks (see above)"
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
