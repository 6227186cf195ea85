"""Issue 16: agents' acp_url, POST /agent_api_keys/webhook-trigger, and the forward ingress
/agents/forward/name/{agent_name}/{path...} with its verification and relay (docs/API.md,
"Webhook triggers and the forward ingress").

A local upstream (http.server on loopback, in a thread) plays the agent's endpoint: it echoes
what it received. GitHub and Slack signatures are computed here with hmac/hashlib.
"""
import hashlib
import hmac
import http.server
import json
import socket
import threading
import time
import uuid

import pytest
import requests

from conftest import Admin, Client, Server, Tenant, AGENT_404

BIG = 3 * 1024 * 1024  # the upstream's large answer (over the cap set below)
CAP = 2 * 1024 * 1024


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen = []

    def log_message(self, *a):
        pass

    def _answer(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        rec = {"method": self.command, "path": self.path,
               "headers": {k.lower(): v for k, v in self.headers.items()},
               "len": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        Upstream.seen.append(rec)
        last = self.path.split("?")[0].rsplit("/", 1)[-1]
        if last == "slow":
            time.sleep(3)
        if last == "big":
            out = b"x" * BIG
            ctype = "application/octet-stream"
        else:
            out = json.dumps(rec).encode()
            ctype = "application/json"
        status = 201 if last == "created" else 200
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(out)))
        self.send_header("X-Upstream", "yes")
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_HEAD = _answer


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # keyward hanging up on the slow upstream (its timeout) is expected


@pytest.fixture(scope="module")
def upstream():
    s = QuietServer(("127.0.0.1", 0), Upstream)
    t = threading.Thread(target=s.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % s.server_address[1]
    s.shutdown()
    s.server_close()


@pytest.fixture(scope="module")
def fsrv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("forward"), env_extra={
        "KEYWARD_FORWARD_ALLOW": "127.0.0.1/32, ::1",
        "KEYWARD_FORWARD_TIMEOUT_MS": "1500",
        "KEYWARD_FORWARD_CONNECT_TIMEOUT_MS": "1000",
        "KEYWARD_FORWARD_MAX_RESPONSE_BYTES": str(CAP),
        "KEYWARD_PUBLIC_URL": "https://hooks.example.com/",
    })
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def fadmin(fsrv):
    return Admin(fsrv, fsrv.token("root-admin", admin=True), sub="root-admin")


@pytest.fixture
def ten(fsrv, fadmin):
    return Tenant(fsrv, fadmin)


def uname(prefix="bot"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def make_agent(alice, upstream, name=None):
    name = name or uname()
    r = alice.post("/agents", json={"name": name, "acp_url": upstream + "/base"})
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["acp_url"] == upstream + "/base"
    return a


def trigger(c, **body):
    return c.post("/agent_api_keys/webhook-trigger", json=body)


def gh_headers(secret, body, delivery=None, event="push"):
    sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"x-hub-signature-256": sig, "x-github-event": event,
            "x-github-delivery": delivery or str(uuid.uuid4()),
            "content-type": "application/json"}


def slack_headers(secret, body, ts=None):
    ts = str(int(time.time()) if ts is None else ts)
    base = b"v0:" + ts.encode() + b":" + body
    sig = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"x-slack-signature": sig, "x-slack-request-timestamp": ts,
            "content-type": "application/json"}


def fwd(server, name, path="hook", method="POST", **kw):
    kw.setdefault("timeout", 15)
    return requests.request(method, "%s/agents/forward/name/%s/%s" % (server.url, name, path),
                            **kw)


def detail(r):
    return r.json()["detail"]


# ---------------------------------------------------------------------------------------------
# acp_url


def test_acp_url_create_patch_and_validation(fsrv, ten, upstream):
    alice = ten.user("alice")
    a = alice.post("/agents", json={"name": uname()}).json()
    assert a["acp_url"] is None
    for bad in ["ftp://x", "http://", "/relative", "http://a b", "https://u@h/", 5]:
        r = alice.post("/agents", json={"name": uname(), "acp_url": bad})
        assert r.status_code == 422, (bad, r.text)
        r = alice.req("PATCH", "/agents/" + a["id"], json={"acp_url": bad})
        assert r.status_code == 422, (bad, r.text)
    r = alice.req("PATCH", "/agents/" + a["id"], json={"acp_url": upstream + "/x"})
    assert r.status_code == 200 and r.json()["acp_url"] == upstream + "/x", r.text
    assert alice.get("/agents/" + a["id"]).json()["acp_url"] == upstream + "/x"
    r = alice.req("PATCH", "/agents/" + a["id"], json={"acp_url": None})
    assert r.status_code == 200 and r.json()["acp_url"] is None


def test_patch_404_403_collapse(fsrv, fadmin, ten, upstream):
    alice, bob = ten.user("alice"), ten.user("bob")
    a = make_agent(alice, upstream)
    # bob cannot read it: the agent 404, byte-identical to an absent id
    r1 = bob.req("PATCH", "/agents/" + a["id"], json={"acp_url": upstream})
    r2 = bob.req("PATCH", "/agents/" + str(uuid.uuid4()), json={"acp_url": upstream})
    assert r1.status_code == r2.status_code == 404 and r1.content == r2.content
    assert r1.json() == AGENT_404
    fadmin.touch(("agent:" + a["id"], "viewer", "user:" + ten.uid("bob")))
    r = bob.req("PATCH", "/agents/" + a["id"], json={"acp_url": upstream})
    assert r.status_code == 403, r.text
    assert alice.get("/agents/" + a["id"]).json()["acp_url"] == upstream + "/base"


# ---------------------------------------------------------------------------------------------
# the trigger route


def test_trigger_github_generates_secret(fsrv, ten, upstream):
    alice = ten.user("alice")
    a = make_agent(alice, upstream, name=uname("my bot"))
    r = trigger(alice, agent_name=a["name"], name="octo/repo", forward_path="/gh/events")
    assert r.status_code == 200, r.text
    b = r.json()
    assert set(b) == {"key_id", "agent_name", "source", "name", "secret", "webhook_path",
                      "webhook_url"}
    assert b["source"] == "github" and b["name"] == "octo/repo"
    assert len(b["secret"]) == 64 and int(b["secret"], 16) >= 0
    enc = a["name"].replace(" ", "%20")
    assert b["webhook_path"] == "/agents/forward/name/%s/gh/events" % enc
    assert b["webhook_url"] == "https://hooks.example.com" + b["webhook_path"]
    assert r.headers.get("cache-control") == "no-store"
    # base_url wins over KEYWARD_PUBLIC_URL
    r = trigger(alice, agent_name=a["name"], name="octo/other", forward_path="x",
                base_url="http://h.test/")
    assert r.json()["webhook_url"] == "http://h.test/agents/forward/name/%s/x" % enc
    # the key is an ordinary github key of the agent
    k = alice.get("/agent_api_keys/" + b["key_id"]).json()
    assert k["api_key_type"] == "github" and k["name"] == "octo/repo"


def test_trigger_errors_in_order(fsrv, fadmin, ten, upstream):
    alice, bob = ten.user("alice"), ten.user("bob")
    a = make_agent(alice, upstream)
    before = alice.get("/agent_api_keys?agent_id=" + a["id"]).json()
    r = trigger(alice, agent_name=a["name"], source="gitlab", name="n", forward_path="p")
    assert r.status_code == 400, r.text
    # source is checked before the agent
    r = trigger(alice, agent_name=uname(), source="gitlab", name="n", forward_path="p")
    assert r.status_code == 400, r.text
    r1 = trigger(alice, agent_name=uname(), name="n", forward_path="p")
    r2 = trigger(bob, agent_name=a["name"], name="n", forward_path="p")
    assert r1.status_code == r2.status_code == 404 and r1.content == r2.content
    fadmin.touch(("agent:" + a["id"], "viewer", "user:" + ten.uid("bob")))
    r = trigger(bob, agent_name=a["name"], name="n", forward_path="p")
    assert r.status_code == 403, r.text
    assert trigger(alice, agent_name=a["name"], name="dup", forward_path="p").status_code == 200
    r = trigger(alice, agent_name=a["name"], name="dup", forward_path="p")
    assert r.status_code == 409
    assert detail(r) == "A github webhook key named 'dup' already exists for this agent."
    # slack: secret required, then the conflict message names slack
    r = trigger(alice, agent_name=a["name"], source="slack", name="A1", forward_path="p")
    assert r.status_code == 400, r.text
    assert trigger(alice, agent_name=a["name"], source="slack", name="A1", forward_path="p",
                   secret="s").status_code == 200
    r = trigger(alice, agent_name=a["name"], source="slack", name="A1", forward_path="p",
                secret="s")
    assert detail(r) == "A slack webhook key named 'A1' already exists for this agent."
    r = trigger(alice, agent_name=a["name"], name="ctl", forward_path="a\nb")
    assert r.status_code == 400, r.text
    after = alice.get("/agent_api_keys?agent_id=" + a["id"]).json()
    assert len(after) == len(before) + 2  # only the two successful creates


# ---------------------------------------------------------------------------------------------
# the ingress: verification


def test_ingress_agent_absent_or_no_acp_url(fsrv, ten):
    alice = ten.user("alice")
    a = alice.post("/agents", json={"name": uname()}).json()
    for name in (a["name"], uname()):
        r = fwd(fsrv, name)
        assert r.status_code == 404
        assert detail(r) == "Agent %s not found or has no ACP URL." % name


def test_ingress_missing_auth(fsrv, ten, upstream):
    a = make_agent(ten.user("alice"), upstream)
    r = fwd(fsrv, a["name"], data=b"{}")
    assert r.status_code == 403 and detail(r) == "Missing authentication for forward request."


def test_ingress_agent_key(fsrv, ten, upstream):
    alice = ten.user("alice")
    a = make_agent(alice, upstream)
    other = make_agent(alice, upstream)
    key = alice.create_key(a["id"], "ext", api_key_type="external")["api_key"]
    okey = alice.create_key(other["id"], "ext", api_key_type="external")["api_key"]
    ikey = alice.create_key(a["id"], "int", api_key_type="internal")["api_key"]
    Upstream.seen.clear()
    r = fwd(fsrv, a["name"], "deep/path%20x", params={"q": "1 2", "z": "y"}, data=b"hello",
            headers={"x-agent-api-key": key, "x-custom": "kept", "cookie": "c=1"})
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["method"] == "POST" and rec["path"] == "/base/deep/path%20x?q=1+2&z=y"
    assert rec["len"] == 5 and r.headers["x-upstream"] == "yes"
    h = rec["headers"]
    assert h["x-custom"] == "kept"
    for gone in ("x-agent-api-key", "authorization", "cookie", "expect"):
        assert gone not in h, gone
    assert h["host"].startswith("127.0.0.1:")
    r = fwd(fsrv, a["name"], "p", method="GET", headers={"Authorization": "AgentKey " + key})
    assert r.status_code == 200 and r.json()["method"] == "GET"
    for bad in (okey, ikey, "kw_nope", ""):
        r = fwd(fsrv, a["name"], headers={"x-agent-api-key": bad})
        assert r.status_code == 401, bad
        assert detail(r) == "Invalid API key for agent ID %s." % a["id"]


def test_ingress_github(fsrv, ten, upstream):
    alice = ten.user("alice")
    a = make_agent(alice, upstream)
    sec = trigger(alice, agent_name=a["name"], name="octo/repo", forward_path="gh").json()["secret"]
    body = json.dumps({"repository": {"full_name": "octo/repo"}, "ref": "main"}).encode()
    Upstream.seen.clear()
    h = gh_headers(sec, body)
    r = fwd(fsrv, a["name"], "gh", data=body, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["sha256"] == hashlib.sha256(body).hexdigest()
    assert r.json()["headers"]["x-hub-signature-256"] == h["x-hub-signature-256"]
    # replay: the same delivery id within the window
    r = fwd(fsrv, a["name"], "gh", data=body, headers=h)
    assert r.status_code == 409, r.text
    assert len(Upstream.seen) == 1

    def sig_only(b, secret=sec):
        return gh_headers(secret, b)
    cases = [
        (b"", 400, "Empty payload in GitHub webhook."),
        (b"{not json", 400, "Failed to parse GitHub webhook payload as JSON."),
        (b'{"a": 1}', 400, "GitHub webhook payload missing repository info."),
        (b'{"repository": {}}', 400, "GitHub webhook payload missing repository name."),
        (b'{"repository": {"full_name": "octo/none"}}', 404,
         "No API key found for GitHub repository octo/none."),
    ]
    for b, st, msg in cases:
        r = fwd(fsrv, a["name"], data=b, headers=sig_only(b))
        assert (r.status_code, detail(r)) == (st, msg), b
    r = fwd(fsrv, a["name"], data=body, headers=sig_only(body, "wrong"))
    assert (r.status_code, detail(r)) == (401, "Invalid GitHub webhook signature")
    h = gh_headers(sec, body)
    h["x-hub-signature-256"] = "sha1=" + "0" * 40
    assert fwd(fsrv, a["name"], data=body, headers=h).status_code == 401


def test_ingress_slack(fsrv, ten, upstream):
    alice = ten.user("alice")
    a = make_agent(alice, upstream)
    sec = "8f742231b10e8888abcd99yyyzzz85a5"
    assert trigger(alice, agent_name=a["name"], source="slack", name="A0KRD7HC3",
                   forward_path="slack", secret=sec).status_code == 200
    body = json.dumps({"api_app_id": "A0KRD7HC3", "type": "event_callback"}).encode()
    h = slack_headers(sec, body)
    r = fwd(fsrv, a["name"], "slack", data=body, headers=h)
    assert r.status_code == 200, r.text
    assert fwd(fsrv, a["name"], "slack", data=body, headers=h).status_code == 409
    # a form body (slash command) names the app too
    form = b"token=x&api_app_id=A0KRD7HC3&text=hi"
    hf = slack_headers(sec, form)
    hf["content-type"] = "application/x-www-form-urlencoded"
    assert fwd(fsrv, a["name"], "slack", data=form, headers=hf).status_code == 200
    # url_verification: answered only after the signature verifies
    ch = json.dumps({"api_app_id": "A0KRD7HC3", "type": "url_verification",
                     "challenge": "abc123"}).encode()
    r = fwd(fsrv, a["name"], data=ch, headers=slack_headers("bad", ch))
    assert (r.status_code, detail(r)) == (401, "Invalid Slack webhook signature")
    r = fwd(fsrv, a["name"], data=ch, headers=slack_headers(sec, ch))
    assert r.status_code == 200 and r.text == "abc123"
    assert r.headers["content-type"].startswith("text/plain")
    h = slack_headers(sec, body)
    del h["x-slack-request-timestamp"]
    r = fwd(fsrv, a["name"], data=body, headers=h)
    assert (r.status_code, detail(r)) == (401, "Missing X-Slack-Request-Timestamp header.")
    h = slack_headers(sec, body)
    h["x-slack-request-timestamp"] = "12x"
    r = fwd(fsrv, a["name"], data=body, headers=h)
    assert (r.status_code, detail(r)) == (400, "Invalid X-Slack-Request-Timestamp header value.")
    old = slack_headers(sec, body, ts=int(time.time()) - 301)
    r = fwd(fsrv, a["name"], data=body, headers=old)
    assert (r.status_code, detail(r)) == (400, "Slack webhook request has bad timestamp.")
    nb = b'{"type": "event_callback"}'
    r = fwd(fsrv, a["name"], data=nb, headers=slack_headers(sec, nb))
    assert (r.status_code, detail(r)) == (400, "Slack webhook payload missing API app ID.")
    ub = b'{"api_app_id": "AOTHER"}'
    r = fwd(fsrv, a["name"], data=ub, headers=slack_headers(sec, ub))
    assert (r.status_code, detail(r)) == (404, "No API key found for Slack app AOTHER.")


def test_key_deleted_mid_stream(fsrv, ten, upstream):
    alice = ten.user("alice")
    a = make_agent(alice, upstream)
    t = trigger(alice, agent_name=a["name"], name="o/r", forward_path="x").json()
    body = b'{"repository": {"full_name": "o/r"}}'
    assert fwd(fsrv, a["name"], data=body, headers=gh_headers(t["secret"], body)).status_code == 200
    assert alice.delete("/agent_api_keys/" + t["key_id"]).status_code == 200
    r = fwd(fsrv, a["name"], data=body, headers=gh_headers(t["secret"], body))
    assert r.status_code == 404 and detail(r) == "No API key found for GitHub repository o/r."
    k = alice.create_key(a["id"], "e", api_key_type="external")["api_key"]
    assert fwd(fsrv, a["name"], headers={"x-agent-api-key": k}).status_code == 200
    alice.delete("/agent_api_keys/name/e?agent_id=" + a["id"])
    assert fwd(fsrv, a["name"], headers={"x-agent-api-key": k}).status_code == 401


def test_large_bodies(fsrv, ten, upstream):
    alice = ten.user("alice")
    a = make_agent(alice, upstream)
    k = alice.create_key(a["id"], "e", api_key_type="external")["api_key"]
    big = bytes(range(256)) * 4000  # ~1 MB request body, binary
    r = fwd(fsrv, a["name"], data=big, headers={"x-agent-api-key": k})
    assert r.status_code == 200 and r.json()["sha256"] == hashlib.sha256(big).hexdigest()
    # an upstream answer over the response cap
    r = fwd(fsrv, a["name"], "big", method="GET", headers={"x-agent-api-key": k})
    assert r.status_code == 502 and detail(r) == "Upstream response too large."


def test_status_passed_back(fsrv, ten, upstream):
    alice = ten.user("alice")
    a = make_agent(alice, upstream)
    k = alice.create_key(a["id"], "e", api_key_type="external")["api_key"]
    r = fwd(fsrv, a["name"], "created", headers={"x-agent-api-key": k})
    assert r.status_code == 201


def test_slow_and_dead_upstreams(fsrv, ten, upstream):
    alice = ten.user("alice")
    a = make_agent(alice, upstream)
    k = alice.create_key(a["id"], "e", api_key_type="external")["api_key"]
    r = fwd(fsrv, a["name"], "slow", headers={"x-agent-api-key": k})
    assert r.status_code == 504 and detail(r) == "Upstream timed out."
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = "http://127.0.0.1:%d" % s.getsockname()[1]
    s.close()
    alice.req("PATCH", "/agents/" + a["id"], json={"acp_url": dead})
    r = fwd(fsrv, a["name"], headers={"x-agent-api-key": k})
    assert r.status_code == 502 and detail(r) == "Upstream unreachable."


def test_disallowed_destinations(fsrv, ten, upstream):
    alice = ten.user("alice")
    a = make_agent(alice, upstream)
    k = alice.create_key(a["id"], "e", api_key_type="external")["api_key"]
    # not in KEYWARD_FORWARD_ALLOW (127.0.0.2 is loopback but outside 127.0.0.1/32),
    # "this host" (0.0.0.0 reaches loopback), link-local / cloud metadata
    port = upstream.rsplit(":", 1)[1]
    for url in ("http://127.0.0.2:%s" % port, "http://0.0.0.0:%s" % port,
                "http://169.254.169.254", "http://[fe80::1]:%s" % port):
        assert alice.req("PATCH", "/agents/" + a["id"], json={"acp_url": url}).status_code == 200
        r = fwd(fsrv, a["name"], headers={"x-agent-api-key": k})
        assert r.status_code == 502 and detail(r) == "Forward destination is not allowed.", url


def test_metrics_and_logs(fsrv, ten, upstream):
    alice = ten.user("alice")
    a = make_agent(alice, upstream)
    sec = trigger(alice, agent_name=a["name"], name="m/r", forward_path="x").json()["secret"]
    body = b'{"repository": {"full_name": "m/r"}}'
    assert fwd(fsrv, a["name"], data=body, headers=gh_headers(sec, body)).status_code == 200
    m = requests.get(fsrv.url + "/metrics", timeout=10).text
    assert 'keyward_forward_requests_total{outcome="relayed"}' in m
    assert 'keyward_forward_requests_total{outcome="replay"}' in m
    log = fsrv.stderr_text()
    assert "via=github" in log and a["id"] in log
    assert sec not in log and "full_name" not in log


def test_replay_refused_across_instances(fsrv, ten, upstream, tmp_path):
    """Two instances over one database share the replay window (PostgreSQL: the table, by
    the database's clock; SQLite: the same file)."""
    alice = ten.user("alice")
    a = make_agent(alice, upstream)
    sec = trigger(alice, agent_name=a["name"], name="x/y", forward_path="x").json()["secret"]
    body = b'{"repository": {"full_name": "x/y"}}'
    h = gh_headers(sec, body)
    other = Server(tmp_path / "second", db=fsrv.db if fsrv.db_path is None else fsrv.db_path,
                   secret=fsrv.secret, env_extra=fsrv.env_extra)
    other.start()
    try:
        assert fwd(fsrv, a["name"], data=body, headers=h).status_code == 200
        r = fwd(other, a["name"], data=body, headers=h)
        assert r.status_code == 409 and detail(r) == "Replayed webhook delivery refused."
        h2 = gh_headers(sec, body)  # a new delivery id passes on either
        assert fwd(other, a["name"], data=body, headers=h2).status_code == 200
    finally:
        other.stop()


def test_slow_upstreams_do_not_hold_other_deliveries(fsrv, ten, upstream):
    """Relays run on the ingress' own threads: six deliveries stuck on a slow upstream (more
    than the server has event loops and pool workers here) do not delay a fast one."""
    alice = ten.user("alice")
    a = make_agent(alice, upstream)
    k = alice.create_key(a["id"], "e", api_key_type="external")["api_key"]
    results = []

    def slow():
        results.append(fwd(fsrv, a["name"], "slow", headers={"x-agent-api-key": k}).status_code)
    ts = [threading.Thread(target=slow) for _ in range(6)]
    for t in ts:
        t.start()
    time.sleep(0.3)
    t0 = time.time()
    r = fwd(fsrv, a["name"], "fast", headers={"x-agent-api-key": k})
    took = time.time() - t0
    for t in ts:
        t.join()
    assert r.status_code == 200 and took < 1.0, took
    assert results == [504] * 6


# ---------------------------------------------------------------------------------------------
# with the rest of keyward: the audit trail and the key lifecycle


def audit_of(c, resource):
    r = c.get("/audit_events", params={"resource": resource, "limit": 100})
    assert r.status_code == 200, r.text
    return r.json()


def test_patch_and_trigger_are_audited(fsrv, ten, upstream):
    alice = ten.user("alice")
    a = make_agent(alice, upstream)
    r = alice.req("PATCH", "/agents/" + a["id"], json={"acp_url": upstream + "/moved"})
    assert r.status_code == 200, r.text
    rev = int(r.headers["X-Keyward-Revision"])
    r = alice.req("PATCH", "/agents/" + a["id"], json={"acp_url": None})
    assert r.status_code == 200, r.text
    evs = audit_of(alice, "agent:" + a["id"])
    assert [e["action"] for e in evs] == ["agent.create", "agent.update", "agent.update"]
    assert evs[0]["detail"]["acp_url"] == upstream + "/base"
    assert evs[1]["detail"] == {"id": a["id"], "name": a["name"], "description": None,
                                "acp_url": upstream + "/moved"}
    assert evs[1]["revision"] == rev and evs[1]["account_id"] == ten.account
    assert evs[1]["actor"] == "user:" + ten.uid("alice")
    assert evs[2]["detail"]["acp_url"] is None
    # a refused PATCH appends nothing
    bob = ten.user("bob")
    assert bob.req("PATCH", "/agents/" + a["id"], json={"acp_url": upstream}).status_code == 404
    assert len(audit_of(alice, "agent:" + a["id"])) == 3
    # the trigger's key: key.create in the same transaction, never the secret
    r = trigger(alice, agent_name=a["name"], name="octo/audited", forward_path="x")
    assert r.status_code == 200, r.text
    b = r.json()
    evs = audit_of(alice, "agent_api_key:" + b["key_id"])
    assert [e["action"] for e in evs] == ["key.create"]
    assert evs[0]["detail"] == {"id": b["key_id"], "agent_id": a["id"], "name": "octo/audited",
                                "api_key_type": "github", "via": "webhook-trigger"}
    assert evs[0]["revision"] == int(r.headers["X-Keyward-Revision"])
    assert b["secret"] not in json.dumps(evs)
    # a refused trigger (409) appends nothing
    r = trigger(alice, agent_name=a["name"], name="octo/audited", forward_path="x")
    assert r.status_code == 409
    n = len([e for e in alice.get("/audit_events", params={"limit": 100,
                                                          "action": "key.create"}).json()
             if e["detail"].get("name") == "octo/audited"])
    assert n == 1


def test_ingress_honours_key_rotation_and_expiry(fsrv, ten, upstream):
    alice = ten.user("alice")
    a = make_agent(alice, upstream)
    k = alice.create_key(a["id"], "ext", api_key_type="external")
    old = k["api_key"]
    assert fwd(fsrv, a["name"], headers={"x-agent-api-key": old}).status_code == 200
    # rotated with a grace period: both work until it ends
    r = alice.post("/agent_api_keys/%s/rotate" % k["id"], json={"grace_period_seconds": 2})
    assert r.status_code == 200, r.text
    new = r.json()["api_key"]
    assert fwd(fsrv, a["name"], headers={"x-agent-api-key": new}).status_code == 200
    assert fwd(fsrv, a["name"], headers={"x-agent-api-key": old}).status_code == 200
    time.sleep(2.5)
    r = fwd(fsrv, a["name"], headers={"x-agent-api-key": old})
    assert r.status_code == 401 and detail(r) == "Invalid API key for agent ID %s." % a["id"]
    assert fwd(fsrv, a["name"], headers={"x-agent-api-key": new}).status_code == 200
    # the delivery counts as the key's use
    deadline = time.time() + 10
    while time.time() < deadline:
        if alice.get("/agent_api_keys/" + k["id"]).json()["last_used_at"]:
            break
        time.sleep(0.2)
    assert alice.get("/agent_api_keys/" + k["id"]).json()["last_used_at"]
    # an expired key is no key: external 401, github 404
    r = alice.post("/agent_api_keys", json={"agent_id": a["id"], "name": "short",
                                            "api_key_type": "external", "ttl_seconds": 1})
    assert r.status_code == 200, r.text
    short = r.json()["api_key"]
    r = alice.post("/agent_api_keys", json={"agent_id": a["id"], "name": "octo/short",
                                            "api_key_type": "github", "ttl_seconds": 1})
    assert r.status_code == 200, r.text
    gsecret = r.json()["api_key"]
    body = json.dumps({"repository": {"full_name": "octo/short"}}).encode()
    assert fwd(fsrv, a["name"], headers={"x-agent-api-key": short}).status_code == 200
    assert fwd(fsrv, a["name"], data=body, headers=gh_headers(gsecret, body)).status_code == 200
    time.sleep(1.5)
    assert fwd(fsrv, a["name"], headers={"x-agent-api-key": short}).status_code == 401
    r = fwd(fsrv, a["name"], data=body, headers=gh_headers(gsecret, body))
    assert r.status_code == 404 and detail(r) == "No API key found for GitHub repository octo/short."
