#!/usr/bin/python3
"""Soak test: `keyward serve` under mixed well-formed load plus a hostile mix, for a while.

Usage: bench/soak.py [--bin build/keyward] [--seconds 600] [--workers 8] [--pg URL]

What runs at the same time, all on loopback, all bounded by --seconds:
  - well-formed load, --workers threads on keep-alive connections: GET an agent by id, list
    agents, create a key, delete a key, create an agent, /v1 relationship writes (touch then
    delete), /v1 checks. Every answer is compared with what the contract says it must be;
    anything else (another status, a reset, a timeout) counts as an error.
  - a hostile mix: idle sockets (held open, reopened when the server closes them), slow
    headers and slow bodies (one byte per second), malformed requests (garbage request lines,
    broken JSON, bad Content-Length) sent on their own connections.
  - an RSS sampler (/proc/PID/status VmRSS every 5 s).

It prints one JSON summary and, last, one line:
  soak: REQS requests, ERRS errors, p50 X ms, p99 Y ms, RSS start A MiB -> end B MiB (max C)
and exits 1 when a well-formed request failed, or when RSS at the end exceeds the RSS after
warm-up by more than --rss-slack MiB (default 64). docs/BENCHMARKS.md quotes its figures.
"""
import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mint(secret, sub, account=None, admin=False, ttl=7200):
    now = int(time.time())
    claims = {"iat": now, "exp": now + ttl, "sub": sub}
    if account:
        claims["account"] = account
    if admin:
        claims["admin"] = True
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), (head + "." + body).encode(), hashlib.sha256).digest()
    return head + "." + body + "." + b64url(sig)


class Conn:
    """One keep-alive connection; reconnects after the server closes it."""

    def __init__(self, host, port, token):
        self.host, self.port, self.token = host, port, token
        self.c = None

    def req(self, method, path, body=None):
        for attempt in (0, 1):
            if self.c is None:
                self.c = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                hdrs = {"Authorization": "Bearer " + self.token}
                data = None
                if body is not None:
                    data = json.dumps(body).encode()
                    hdrs["Content-Type"] = "application/json"
                self.c.request(method, path, body=data, headers=hdrs)
                r = self.c.getresponse()
                raw = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.c.close()
                    self.c = None
                return r.status, raw
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # A keep-alive connection the server closed while idle: retry once on a
                # new one (a request on a fresh connection that fails is an error).
                self.c.close()
                self.c = None
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.lat = []
        self.by_op = {}
        self.errors = []

    def ok(self, op, ms):
        with self.lock:
            self.lat.append(ms)
            self.by_op[op] = self.by_op.get(op, 0) + 1

    def err(self, op, what):
        with self.lock:
            self.errors.append("%s: %s" % (op, what))


def well_formed(host, port, secret, tenant, deadline, stats, rng):
    account, user = tenant
    c = Conn(host, port, mint(secret, user, account=account))
    admin = Conn(host, port, mint(secret, "soak-admin", admin=True))
    agents, keys = [], []

    def call(conn, op, method, path, body, want):
        t0 = time.perf_counter()
        try:
            status, raw = conn.req(method, path, body)
        except Exception as e:  # noqa: BLE001 - every failure of a good request counts
            stats.err(op, repr(e))
            return None
        ms = (time.perf_counter() - t0) * 1000
        if status != want:
            stats.err(op, "status %d: %s" % (status, raw[:200]))
            return None
        stats.ok(op, ms)
        return json.loads(raw) if raw else None

    n = 0
    while time.monotonic() < deadline:
        n += 1
        r = rng.random()
        if not agents or r < 0.05:
            a = call(c, "create_agent", "POST", "/agents",
                     {"name": "soak-%s" % secrets.token_hex(6), "description": "soak"}, 200)
            if a:
                agents.append(a["id"])
            continue
        ag = rng.choice(agents)
        if r < 0.40:
            call(c, "get_agent", "GET", "/agents/" + ag, None, 200)
        elif r < 0.55:
            call(c, "list_agents", "GET", "/agents?limit=20&page_number=1", None, 200)
        elif r < 0.70:
            k = call(c, "create_key", "POST", "/agent_api_keys",
                     {"agent_id": ag, "name": "k-%s" % secrets.token_hex(6),
                      "api_key_type": "internal"}, 200)
            if k:
                keys.append(k["id"])
        elif r < 0.80 and keys:
            call(c, "delete_key", "DELETE", "/agent_api_keys/" + keys.pop(), None, 200)
        elif r < 0.90:
            rel = {"resource": {"objectType": "account", "objectId": account},
                   "relation": "member",
                   "subject": {"object": {"objectType": "user",
                                          "objectId": "m-%d" % rng.randrange(50)}}}
            op = "OPERATION_TOUCH" if rng.random() < 0.5 else "OPERATION_DELETE"
            call(admin, "v1_write", "POST", "/v1/relationships/write",
                 {"updates": [{"operation": op, "relationship": rel}]}, 200)
        else:
            call(admin, "v1_check", "POST", "/v1/permissions/check",
                 {"resource": {"objectType": "agent", "objectId": ag}, "permission": "read",
                  "subject": {"object": {"objectType": "user", "objectId": user}}}, 200)


def hostile_idle(host, port, deadline, count, counters):
    socks = []
    while time.monotonic() < deadline:
        socks = [s for s in socks if s.fileno() != -1]
        while len(socks) < count and time.monotonic() < deadline:
            try:
                socks.append(socket.create_connection((host, port), timeout=2))
            except OSError:
                counters["idle_refused"] += 1
                time.sleep(0.05)
                break
        # Reap the ones the server closed (a readable socket with no data).
        for s in list(socks):
            s.setblocking(False)
            try:
                if s.recv(4096) == b"":
                    counters["idle_closed_by_server"] += 1
                    s.close()
                    socks.remove(s)
            except BlockingIOError:
                pass
            except OSError:
                s.close()
                socks.remove(s)
        time.sleep(1)
    for s in socks:
        s.close()


def hostile_slow(host, port, deadline, count, counters, token):
    """Connections that send their request one byte per second (headers, then a body)."""
    def one():
        body = b'{"name": "slow", "description": "' + b"x" * 200 + b'"}'
        req = (b"POST /agents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode() +
               b"\r\nContent-Type: application/json\r\nContent-Length: " +
               str(len(body)).encode() + b"\r\n\r\n" + body)
        while time.monotonic() < deadline:
            try:
                s = socket.create_connection((host, port), timeout=2)
            except OSError:
                counters["slow_refused"] += 1
                time.sleep(1)
                continue
            try:
                for i in range(len(req)):
                    if time.monotonic() > deadline:
                        break
                    s.sendall(req[i:i + 1])
                    time.sleep(1)
                counters["slow_completed"] += 1
            except OSError:
                counters["slow_cut_by_server"] += 1
            finally:
                s.close()
    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


BAD_REQUESTS = [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
    b"POST /agents HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /agents HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
    b"POST /agents HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    b"POST /agents HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /agents HTTP/1.1\r\n\r\n",
    b"GET /agents HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n",
]


def hostile_bad(host, port, deadline, counters, token):
    rng = random.Random(7)
    while time.monotonic() < deadline:
        choice = rng.randrange(len(BAD_REQUESTS) + 2)
        if choice < len(BAD_REQUESTS):
            raw = BAD_REQUESTS[choice]
        elif choice == len(BAD_REQUESTS):
            raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        else:  # authenticated, broken JSON
            body = b'{"name": '
            raw = (b"POST /agents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                   token.encode() + b"\r\nContent-Length: " + str(len(body)).encode() +
                   b"\r\n\r\n" + body)
        try:
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
            s.recv(65536)
            s.close()
            counters["bad_sent"] += 1
        except OSError:
            counters["bad_cut"] += 1
        time.sleep(0.02)


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "keyward"))
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--idle", type=int, default=300, help="idle sockets held open")
    ap.add_argument("--slow", type=int, default=40, help="slow (1 byte/s) connections")
    ap.add_argument("--pg", default=None, help="a postgres:// URL of an empty database")
    ap.add_argument("--rss-slack", type=float, default=64.0)
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = tempfile.mkdtemp(prefix="keyward-soak-")
    secret = secrets.token_urlsafe(32)
    db = args.pg or "sqlite:" + os.path.join(tmp, "k.db")
    env = dict(os.environ, KEYWARD_JWT_SECRET=secret)
    errlog = open(os.path.join(tmp, "stderr.log"), "wb")
    proc = subprocess.Popen([args.bin, "serve", "--db", db, "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=errlog, env=env)
    line = proc.stdout.readline().decode()
    m = re.match(r"listening on http://([\d.]+):(\d+)", line)
    if not m:
        print("soak: server did not start: %r" % line, file=sys.stderr)
        return 2
    host, port = m.group(1), int(m.group(2))

    admin = Conn(host, port, mint(secret, "soak-admin", admin=True))
    tenants = []
    for i in range(args.workers):
        account, user = "soak%d" % i, "alice%d" % i
        status, raw = admin.req("POST", "/v1/relationships/write", {"updates": [
            {"operation": "OPERATION_TOUCH", "relationship": {
                "resource": {"objectType": "account", "objectId": account}, "relation": "admin",
                "subject": {"object": {"objectType": "user", "objectId": user}}}}]})
        assert status == 200, raw
        tenants.append((account, user))

    stats = Stats()
    counters = {k: 0 for k in ("idle_refused", "idle_closed_by_server", "slow_refused",
                               "slow_completed", "slow_cut_by_server", "bad_sent", "bad_cut")}
    start = time.monotonic()
    deadline = start + args.seconds
    rss = []
    threads = []
    for i, t in enumerate(tenants):
        threads.append(threading.Thread(target=well_formed, daemon=True, args=(
            host, port, secret, t, deadline, stats, random.Random(i))))
    tok = mint(secret, tenants[0][1], account=tenants[0][0])
    threads.append(threading.Thread(target=hostile_idle, daemon=True,
                                    args=(host, port, deadline, args.idle, counters)))
    threads.append(threading.Thread(target=hostile_slow, daemon=True,
                                    args=(host, port, deadline, args.slow, counters, tok)))
    threads.append(threading.Thread(target=hostile_bad, daemon=True,
                                    args=(host, port, deadline, counters, tok)))
    for t in threads:
        t.start()
    warm_rss = None
    while time.monotonic() < deadline:
        time.sleep(5)
        el = time.monotonic() - start
        rss.append((round(el), round(rss_mib(proc.pid), 1)))
        if warm_rss is None and el >= min(60, args.seconds / 4):
            warm_rss = rss[-1][1]
    for t in threads:
        t.join(timeout=30)
    end_rss = rss_mib(proc.pid)
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    errlog.close()
    shutil.rmtree(tmp, ignore_errors=True)

    lat = sorted(stats.lat)
    p50 = statistics.median(lat) if lat else 0.0
    p99 = lat[int(len(lat) * 0.99) - 1] if lat else 0.0
    warm_rss = warm_rss if warm_rss is not None else (rss[0][1] if rss else 0.0)
    summary = {
        "seconds": args.seconds, "workers": args.workers, "requests": len(lat),
        "errors": len(stats.errors), "first_errors": stats.errors[:10], "by_op": stats.by_op,
        "p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "hostile": counters,
        "rss_mib": {"warm": warm_rss, "end": round(end_rss, 1),
                    "max": max((r for _, r in rss), default=0.0),
                    "samples": " ".join("%ds:%.0f" % (t, r) for t, r in rss)},
        "server_exit": proc.returncode,
    }
    print(json.dumps(summary, indent=1))
    print("soak: %d requests, %d errors, p50 %.2f ms, p99 %.2f ms, RSS after warm-up %.1f MiB -> "
          "end %.1f MiB (max %.1f)" % (len(lat), len(stats.errors), p50, p99, warm_rss, end_rss,
                                      summary["rss_mib"]["max"]))
    bad = stats.errors or end_rss > warm_rss + args.rss_slack or proc.returncode != 0
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
