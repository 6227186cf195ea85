"""The HTTP server against hostile clients (issue 9 items 1, 2, 4, 8), black box over raw sockets.

- every error the server produces itself is the contract's JSON (never HTML), /v1 in the
  gateway shape;
- credentials are checked from the headers before a body is read (401 at once);
- request smuggling shapes are refused and the connection closed;
- idle and trickling connections neither starve legitimate callers nor live forever.
"""
import json
import socket
import time

from conftest import Client, Server


def _conn(server, timeout=10):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _read_response(s):
    """One Content-Length framed response: (status, headers dict, body bytes)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response: %r" % buf)
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:n]


def _closed(s, timeout=3.0):
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def _raw(server, data):
    s = _conn(server)
    try:
        s.sendall(data)
        st, h, body = _read_response(s)
        return st, h, body, _closed(s)
    finally:
        s.close()


def test_server_made_errors_are_json(srv):
    cases = [
        (b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"POST /agents HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
        (b"POST /agents HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\nxx", 413),
        (b"POST /agents HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET /healthz HTTP/1.1\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 70000 + b"\r\n\r\n", 431),
    ]
    for raw, want in cases:
        st, h, body, closed = _raw(srv, raw)
        assert st == want, (raw[:60], st, body)
        assert h["content-type"] == "application/json"
        assert b"<html" not in body.lower()
        assert set(json.loads(body)) == {"detail"}, body
        assert closed, raw[:60]
    # Under /v1 the same errors carry the gateway fields.
    st, h, body, _ = _raw(srv, b"POST /v1/nope HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                               b"Connection: close\r\n\r\n")
    assert st == 404
    assert json.loads(body) == {"detail": "Not Found", "code": 5, "message": "Not Found",
                                "details": []}


def test_credentials_are_checked_before_the_body(srv):
    """A 1 MiB body announced with a bad token: the 401 comes before a byte of it is sent,
    and the connection closes (the body is never read)."""
    for auth in (b"Authorization: Bearer not-a-token\r\n", b"x-agent-api-key: kw_nope\r\n", b""):
        s = _conn(srv)
        try:
            t0 = time.monotonic()
            s.sendall(b"POST /agents HTTP/1.1\r\nHost: x\r\n" + auth +
                      b"Content-Type: application/json\r\nContent-Length: 1048576\r\n\r\n")
            st, _, body = _read_response(s)
            assert st == 401, body
            assert json.loads(body) == {"detail": "Unauthorized"}
            assert time.monotonic() - t0 < 5
            assert _closed(s)
        finally:
            s.close()
    # /v1 answers in its own shape.
    st, _, body, closed = _raw(srv, b"POST /v1/permissions/check HTTP/1.1\r\nHost: x\r\n"
                                    b"Content-Length: 1048576\r\n\r\n")
    assert st == 401
    assert json.loads(body) == {"detail": "Unauthorized", "code": 16, "message": "Unauthorized",
                                "details": []}
    assert closed


def test_smuggled_delete_is_not_executed(tenant):
    alice = tenant.user("alice")
    ag = alice.create_agent("smuggle-target")
    tok = alice.headers["Authorization"].encode()
    inner = (b"DELETE /agents/" + ag["id"].encode() + b" HTTP/1.1\r\nHost: x\r\n"
             b"Authorization: " + tok + b"\r\n\r\n")
    for te in (b"chunked", b" chunked", b"Chunked"):
        body = b"0\r\n\r\n" + inner
        raw = (b"POST /agents HTTP/1.1\r\nHost: x\r\nAuthorization: " + tok +
               b"\r\nContent-Length: %d\r\nTransfer-Encoding:" % len(body) + te +
               b"\r\n\r\n" + body)
        st, _, _, closed = _raw(tenant.server, raw)
        assert st == 400
        assert closed
    # Two different Content-Lengths.
    raw = (b"POST /agents HTTP/1.1\r\nHost: x\r\nAuthorization: " + tok +
           b"\r\nContent-Length: 0\r\nContent-Length: %d\r\n\r\n" % len(inner) + inner)
    st, _, _, closed = _raw(tenant.server, raw)
    assert st == 400 and closed
    assert alice.get("/agents/" + ag["id"]).status_code == 200


def test_idle_and_trickling_connections_do_not_starve_callers(tmp_path):
    s = Server(tmp_path / "hostile",
               extra_args=["--header-timeout", "2", "--max-conns-per-addr", "4096"])
    s.start()
    idle, trickle = [], []
    try:
        admin_tok = s.token("adm", admin=True)
        for _ in range(1500):
            idle.append(_conn(s))
        for _ in range(200):
            c = _conn(s)
            c.sendall(b"GET /healthz HTTP/1.1\r\n")
            trickle.append(c)
        client = Client(s, admin_tok)
        lat = []
        t_end = time.monotonic() + 3.0
        i = 0
        while time.monotonic() < t_end:
            for c in trickle[i % 20::20]:
                try:
                    c.send(b"X")  # one byte at a time never extends the deadline
                except OSError:
                    pass
            i += 1
            t0 = time.monotonic()
            r = client.get("/healthz")
            lat.append(time.monotonic() - t0)
            assert r.status_code == 200
        lat.sort()
        p99 = lat[int(len(lat) * 0.99) - 1]
        print("legitimate /healthz during the attack: %d requests, p99 %.1f ms" %
              (len(lat), p99 * 1000))
        assert p99 < 0.5
        # The trickling ones were cut at their absolute deadline (2 s after accept): 408.
        got_408 = 0
        for c in trickle:
            c.settimeout(5)
            try:
                data = c.recv(4096)
            except OSError:
                data = b""
            if data.startswith(b"HTTP/1.1 408"):
                got_408 += 1
        assert got_408 >= 190, got_408
        m = client.get("/metrics").text
        assert 'keyward_http_deadline_expired_total{phase="headers"}' in m
    finally:
        for c in idle + trickle:
            c.close()
        s.stop()
