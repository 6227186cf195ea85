"""Process-level behaviour on fresh servers: `keyward token`, restart durability (with and
without KEYWARD_JWT_SECRET), SIGTERM drain, stdout/stderr discipline, no secret in logs."""
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import (Admin, Client, Server, UNAUTH, agent_key_client, keyward_bin, mint,
                      verify_hs256)


def run_token(args, secret=None, db=None):
    env = dict(os.environ)
    env.pop("KEYWARD_JWT_SECRET", None)
    env.pop("KEYWARD_DB", None)
    if secret is not None:
        env["KEYWARD_JWT_SECRET"] = secret
    cmd = [keyward_bin(), "token"] + args + (["--db", db] if db else [])
    p = subprocess.run(cmd, env=env, capture_output=True, timeout=30)
    assert p.returncode == 0, (cmd, p.returncode, p.stderr.decode(errors="replace"))
    out = p.stdout.decode().strip()
    assert "\n" not in out, out
    return out


def test_keyward_token_cross_check(srv):
    tok = run_token(["--sub", "crosscheck", "--account", "acme-x", "--admin", "--ttl", "600"], secret=srv.secret)
    header, claims = verify_hs256(tok, srv.secret)
    assert header["alg"] == "HS256"
    assert claims["sub"] == "crosscheck"
    assert claims.get("account") == "acme-x"
    assert claims.get("admin") is True
    assert claims.get("principal_type", "user") == "user"
    now = time.time()
    assert now + 500 < claims["exp"] <= now + 700
    # the server accepts it as an admin, and our own minted token the same way
    c = Client(srv, tok)
    assert c.post("/v1/relationships/read", json={"relationshipFilter": {"resourceType": "account"}}).status_code == 200
    tok = run_token(["--sub", "svc1", "--type", "service_account"], secret=srv.secret)
    _, claims = verify_hs256(tok, srv.secret)
    assert claims["principal_type"] == "service_account" and "admin" not in claims
    assert Client(srv, tok).get("/agents").status_code == 200
    # a token minted for a different secret is refused
    assert Client(srv, mint("other-secret", "crosscheck", admin=True)).get("/agents").status_code == 401


def _populate(srv, admin_tok):
    admin = Admin(srv, admin_tok)
    acct = "durable"
    admin.touch(("account:" + acct, "member", "user:bob"), ("account:" + acct, "admin", "user:alice"))
    bob = Client(srv, srv_token(srv, "bob", acct))
    a = bob.create_agent("durable-agent", "survives restarts")
    k = bob.create_key(a["id"], "ik", api_key_type="internal")
    g = bob.create_key(a["id"], "gh", api_key_type="github")
    return acct, a, k, g


def srv_token(srv, sub, acct):
    if srv.secret is not None:
        return mint(srv.secret, sub, account=acct)
    return run_token(["--sub", sub, "--account", acct], db=srv.db)


def _verify_state(srv, admin_tok, acct, a, k, g):
    admin = Admin(srv, admin_tok)
    bob = Client(srv, srv_token(srv, "bob", acct))
    r = bob.get("/agents/" + a["id"])
    assert r.status_code == 200 and r.json() == a
    lst = bob.get("/agent_api_keys?agent_id=" + a["id"]).json()
    assert [x["id"] for x in lst] == [k["id"], g["id"]]
    assert lst[0]["created_at"] == k["created_at"]
    assert agent_key_client(srv, k["api_key"]).get("/agents/" + a["id"]).status_code == 200
    assert agent_key_client(srv, g["api_key"]).get("/agents/" + a["id"]).status_code == 401
    rels = admin.read_rels("agent_api_key", k["id"])
    assert {x["relation"] for x in rels} == {"parent_agent", "account", "owner"}
    assert {x["relation"] for x in admin.read_rels("account", acct)} == {"member", "admin"}
    assert Client(srv, srv_token(srv, "alice", acct)).get("/agents/name/durable-agent").json()["id"] == a["id"]


def test_restart_durability_with_env_secret(tmp_path):
    s = Server(tmp_path / "env")
    s.start()
    try:
        admin_tok = s.token("adm", admin=True)
        state = _populate(s, admin_tok)
        assert s.stop() == 0
        s.start()
        _verify_state(s, admin_tok, *state)
        # deleting after restart works and is durable
        bob = Client(s, s.token("bob", account=state[0]))
        assert bob.delete("/agent_api_keys/" + state[2]["id"]).status_code == 200
        assert s.stop() == 0
        s.start()
        assert bob.get("/agent_api_keys/" + state[2]["id"]).status_code == 404
        assert agent_key_client(s, state[2]["api_key"]).get("/agents").status_code == 401
    finally:
        s.kill()


def test_restart_durability_generated_secret(tmp_path):
    s = Server(tmp_path / "gen", secret=None)
    s.start()
    try:
        admin_tok = run_token(["--sub", "adm", "--admin"], db=s.db)
        state = _populate(s, admin_tok)
        assert s.stop() == 0
        s.start()
        # the same token still verifies: the generated secret was kept in the database
        _verify_state(s, admin_tok, *state)
        tok2 = run_token(["--sub", "adm", "--admin"], db=s.db)
        assert Admin(s, tok2).read_rels("account", "durable")
        # a token from some other secret is refused
        assert Client(s, mint("guess", "adm", admin=True)).get("/agents").status_code == 401
    finally:
        s.kill()


def test_sigterm_drains_in_flight_request_and_exits_0(tmp_path):
    s = Server(tmp_path / "term")
    s.start()
    try:
        s_admin = Admin(s, s.token("adm", admin=True))
        s_admin.touch(("account:t", "member", "user:bob"))
        tok = s.token("bob", account="t")
        body = json.dumps({"name": "in-flight"}).encode()
        conn = socket.create_connection(("127.0.0.1", s.port), timeout=15)
        conn.sendall(b"POST /agents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok.encode() +
                     b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                     % len(body) + body[:5])
        time.sleep(0.5)
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert s.proc.poll() is None, "server exited with a request in flight"
        conn.sendall(body[5:])
        resp = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            resp += chunk
        conn.close()
        assert resp.startswith(b"HTTP/1.1 200"), resp[:200]
        assert b"in-flight" in resp
        rc = s.proc.wait(15)
        assert rc == 0, rc
        s.proc.stdout.close()
        s.proc = None
        # stopped accepting
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", s.port), timeout=2).close()
        # the drained request was committed
        s.start()
        r = Client(s, tok).get("/agents/name/in-flight")
        assert r.status_code == 200, r.text
        assert s.stop(signal.SIGINT) == 0
    finally:
        s.kill()


def test_no_secret_in_logs_and_log_line_shape(tmp_path):
    s = Server(tmp_path / "logs")
    s.start()
    secrets_seen = []
    n_requests = 0
    try:
        admin_tok = s.token("adm", admin=True)
        secrets_seen.append(admin_tok)
        admin = Admin(s, admin_tok)
        admin.touch(("account:l", "member", "user:bob"))
        n_requests += 1
        bob_tok = s.token("bob", account="l")
        secrets_seen.append(bob_tok)
        bob = Client(s, bob_tok)
        a = bob.create_agent("logged")
        n_requests += 1
        for t in ("internal", "external", "github", "slack"):
            k = bob.create_key(a["id"], "k-" + t, api_key_type=t)
            secrets_seen.append(k["api_key"])
            n_requests += 1
        supplied = "Supplied-Secret-Value-1234567890"
        bob.create_key(a["id"], "sup", api_key_type="internal", api_key=supplied)
        secrets_seen.append(supplied)
        n_requests += 1
        for key in secrets_seen[2:]:
            for scheme in ("x-agent-api-key", "AgentKey"):
                agent_key_client(s, key, scheme).get("/agents/" + a["id"])
                n_requests += 1
        wrong = "kw_" + "Q" * 43
        secrets_seen.append(wrong)
        agent_key_client(s, wrong).get("/agents")
        bad_tok = mint("wrong-secret", "mallory")
        secrets_seen.append(bad_tok)
        Client(s, bad_tok).get("/agents")
        n_requests += 2
        bob.post("/agent_api_keys", json={"agent_id": a["id"], "name": "bad", "api_key": "short secret x"})
        n_requests += 1
        Client(s).get("/healthz")
        Client(s).get("/nope")
        n_requests += 2
        assert s.stop() == 0
    finally:
        s.kill()
    assert s.extra_stdout == b"", "stdout carries more than the listening line: %r" % s.extra_stdout[:300]
    log = s.stderr_text()
    for sec in secrets_seen + [s.secret, "short secret x"]:
        assert sec not in log, "secret leaked into the log"
        for part in sec.split(".") if sec.count(".") == 2 else []:
            assert part not in log or len(part) < 20, "a token part leaked into the log"
    fields = {"ts", "level", "request_id", "method", "route", "status", "duration_ms", "subject"}
    req_lines = []
    for line in log.splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and "route" in obj:
            req_lines.append(obj)
            assert fields <= set(obj), (fields - set(obj), line)
            assert isinstance(obj["status"], int) and isinstance(obj["duration_ms"], (int, float))
            assert obj["request_id"]
    assert len(req_lines) >= n_requests, (len(req_lines), n_requests)
    routes = {o["route"] for o in req_lines}
    assert "/agent_api_keys" in routes and "/agents/{id}" in routes, routes
    assert a["id"] not in {o["route"] for o in req_lines}
    subs = {o["subject"] for o in req_lines}
    assert "user:bob" in subs and ("agent:" + a["id"]) in subs, subs


def test_bad_schema_refused_at_start(tmp_path):
    schema = tmp_path / "bad.zed"
    schema.write_text("definition user {}\ndefinition account {\n relation member: user\n}\n")
    p = subprocess.run([keyward_bin(), "serve", "--db", "sqlite:%s" % (tmp_path / "k.db"),
                        "--listen", "127.0.0.1:0", "--schema", str(schema)],
                       capture_output=True, timeout=30, env=dict(os.environ, KEYWARD_JWT_SECRET="x" * 32))
    assert p.returncode != 0
    assert p.stdout == b""
    assert b"agent" in p.stderr, p.stderr[-500:]


def test_token_without_sub_is_401(srv):
    # a token that lacks `sub` names no principal: refused
    tok = mint(srv.secret, None)
    assert Client(srv, tok).get("/agents").status_code == 401
    assert Client(srv, tok).get("/agents").json() == UNAUTH
