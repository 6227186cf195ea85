#!/usr/bin/python3
"""bench/name_timing.py - does an existing-but-unreadable name answer slower than an absent one?
(issue 9, item 8: the by-name routes must do the same work on both paths.)

    KEYWARD_BIN=build/keyward bench/name_timing.py [--samples N] [--rounds R] [--desc CHARS]
                                                   [--cases agent,key,key_name]

Starts its own `keyward serve` over a temporary SQLite database, makes one tenant (bob owns an
agent "hidden" with a key "hk", and an agent "shared" with a key "hk2"; gina is a member who
views "shared" and has no other grant), then, on one keep-alive connection per case, times
gina's requests:

  agent     GET /agents/name/hidden        (exists, unreadable)  vs  /agents/name/absent-N
  key       GET /agent_api_keys/name/hk?agent_name=hidden
            (the agent is unreadable)                            vs  agent_name=absent-N
  key_name  GET /agent_api_keys/name/hk2?agent_id=<shared>
            (gina reads the agent, not the key)                  vs  an absent key name

The two requests of a case alternate (A, B, A, B, ...) so drift on a noisy machine hits both
alike. Every answer must be the same 404 bytes. Prints one JSON line per case: the medians
(microseconds, client-side round trip), their difference and the number of samples. The
figure to look at is the difference of the medians, not the absolute values (loopback HTTP
dominates them). Not a test: the machine's noise decides what a difference means.
"""
import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import select
import statistics
import subprocess
import sys
import tempfile
import time


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mint(secret, sub, account=None, admin=False):
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + 3600}
    if account:
        claims["account"] = account
    if admin:
        claims["admin"] = True
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), (head + "." + body).encode(), hashlib.sha256).digest()
    return head + "." + body + "." + b64url(sig)


class Conn:
    def __init__(self, port, token):
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.h = {"Authorization": "Bearer " + token}

    def req(self, method, path, body=None):
        h = dict(self.h)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        self.c.request(method, path, body=data, headers=h)
        r = self.c.getresponse()
        return r.status, r.read()


def start(binary, workdir, secret):
    env = dict(os.environ, KEYWARD_JWT_SECRET=secret)
    for k in ("KEYWARD_DB", "KEYWARD_LISTEN", "KEYWARD_SCHEMA"):
        env.pop(k, None)
    err = open(os.path.join(workdir, "stderr.log"), "wb")
    p = subprocess.Popen([binary, "serve", "--db", "sqlite:" + os.path.join(workdir, "k.db"),
                          "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=err,
                         stdin=subprocess.DEVNULL, env=env)
    line = b""
    deadline = time.time() + 20
    while not line.endswith(b"\n") and time.time() < deadline:
        r, _, _ = select.select([p.stdout], [], [], 1)
        if r:
            ch = os.read(p.stdout.fileno(), 1)
            if not ch:
                break
            line += ch
    m = re.match(rb"^listening on http://127\.0\.0\.1:(\d+)\n$", line)
    if not m:
        p.kill()
        sys.exit("server did not start: %r" % line)
    return p, int(m.group(1))


def must(status_body, want=200):
    status, body = status_body
    if status != want:
        sys.exit("unexpected %d: %s" % (status, body[:200]))
    return json.loads(body) if body else None


def case(conn, path_a, path_b, samples):
    """Alternates A and B; returns (median_a_us, median_b_us). Every answer must be one 404."""
    ta, tb = [], []
    ref = None
    for i in range(samples):
        for path, out in ((path_a(i), ta), (path_b(i), tb)):
            t0 = time.perf_counter_ns()
            status, body = conn.req("GET", path)
            out.append((time.perf_counter_ns() - t0) / 1000.0)
            if ref is None:
                ref = (status, body)
            if (status, body) != ref or status != 404:
                sys.exit("answers differ: %r vs %r on %s" % (ref, (status, body), path))
    return statistics.median(ta), statistics.median(tb)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--desc", type=int, default=4000, help="description length of 'hidden'")
    ap.add_argument("--cases", default="agent,key,key_name")
    args = ap.parse_args()
    binary = os.environ.get("KEYWARD_BIN") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "build", "keyward")
    secret = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory() as wd:
        proc, port = start(binary, wd, secret)
        try:
            acct = "acme"
            admin = Conn(port, mint(secret, "root", admin=True))
            rels = [("admin", "alice"), ("member", "bob"), ("member", "gina")]
            must(admin.req("POST", "/v1/relationships/write", {"updates": [
                {"operation": "OPERATION_TOUCH", "relationship": {
                    "resource": {"objectType": "account", "objectId": acct}, "relation": r,
                    "subject": {"object": {"objectType": "user", "objectId": u}}}}
                for r, u in rels]}))
            bob = Conn(port, mint(secret, "bob", account=acct))
            gina = Conn(port, mint(secret, "gina", account=acct))
            hidden = must(bob.req("POST", "/agents", {"name": "hidden",
                                                  "description": "x" * args.desc or None}))
            must(bob.req("POST", "/agent_api_keys", {"agent_id": hidden["id"], "name": "hk"}))
            shared = must(bob.req("POST", "/agents", {"name": "shared"}))
            # gina views bob's agent "shared" but not its key hk2 (a key needs a grant of its
            # own or `update` on the agent)
            must(admin.req("POST", "/v1/relationships/write", {"updates": [
                {"operation": "OPERATION_TOUCH", "relationship": {
                    "resource": {"objectType": "agent", "objectId": shared["id"]},
                    "relation": "viewer",
                    "subject": {"object": {"objectType": "user", "objectId": "gina"}}}}]}))
            must(bob.req("POST", "/agent_api_keys", {"agent_id": shared["id"], "name": "hk2"}))
            cases = {
                "agent": (lambda i: "/agents/name/hidden", lambda i: "/agents/name/absent-%d" % i),
                "key": (lambda i: "/agent_api_keys/name/hk?agent_name=hidden",
                        lambda i: "/agent_api_keys/name/hk?agent_name=absent-%d" % i),
                "key_name": (lambda i: "/agent_api_keys/name/hk2?agent_id=" + shared["id"],
                             lambda i: "/agent_api_keys/name/absent-%d?agent_id=%s"
                             % (i, shared["id"])),
            }
            for name, (pa, pb) in cases.items():
                if name not in args.cases.split(","):
                    continue
                case(gina, pa, pb, 200)  # warm-up
                for rnd in range(args.rounds):
                    ma, mb = case(gina, pa, pb, args.samples)
                    print(json.dumps({"case": name, "round": rnd + 1, "samples": args.samples,
                                      "unreadable_median_us": round(ma, 2),
                                      "absent_median_us": round(mb, 2),
                                      "difference_us": round(ma - mb, 2)}), flush=True)
        finally:
            proc.terminate()
            proc.wait(15)


if __name__ == "__main__":
    main()
