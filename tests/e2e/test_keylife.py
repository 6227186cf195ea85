"""Issue 14, a key's life: expiry, rotation, last_used_at, POST /auth/verify and list cursors
(docs/API.md, "A key's lifecycle" and "Verifying credentials"). Every test here runs on both
backends; the ones over two instances need PostgreSQL (KEYWARD_TEST_PG_URL)."""
import datetime
import re
import threading
import time

import pytest
import requests

from conftest import (Admin, Client, KEY_404, KEY_RE, TS_RE, UNAUTH, Server, Tenant,
                      agent_key_client, pg_mode, same_404, snapshot)


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc)


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc)


def unknown_key_401(server):
    return agent_key_client(server, "kw_" + "A" * 43).get("/agents")


def wait_until(t):
    """Sleeps until wall-clock time t (a datetime) has passed."""
    d = (t - now_utc()).total_seconds()
    if d > 0:
        time.sleep(d + 0.05)


# ---------------------------------------------------------------------------------------------
# 1. Expiry


def test_expiry_validation_changes_nothing(tenant):
    bob = tenant.user("bob")
    a = bob.create_agent("exp-val")
    before = snapshot(bob)
    future = iso(now_utc() + datetime.timedelta(hours=1))
    bad = [
        {"ttl_seconds": 60, "expires_at": future},  # both
        {"ttl_seconds": 0},
        {"ttl_seconds": -5},
        {"ttl_seconds": 315360001},
        {"ttl_seconds": "60"},
        {"ttl_seconds": 1.5},
        {"ttl_seconds": True},
        {"expires_at": iso(now_utc() - datetime.timedelta(seconds=1))},  # past
        {"expires_at": "2030-02-30T00:00:00Z"},
        {"expires_at": "tomorrow"},
        {"expires_at": 1900000000},
        {"expires_at": iso(now_utc() + datetime.timedelta(days=3700))},  # over 10 years
    ]
    for extra in bad:
        body = {"agent_id": a["id"], "name": "k", **extra}
        r = bob.post("/agent_api_keys", json=body)
        assert r.status_code == 422, (extra, r.status_code, r.text)
        assert "expires_at" in r.json()["detail"], r.text
    # 422 before 400 (both agent_id and agent_name) and before the agent's 404
    r = bob.post("/agent_api_keys", json={"agent_id": a["id"], "agent_name": "x", "name": "k",
                                          "ttl_seconds": 0})
    assert r.status_code == 422, r.text
    assert snapshot(bob) == before


def test_expiry_shown_and_enforced_byte_identical(srv, tenant):
    bob = tenant.user("bob")
    a = bob.create_agent("exp")
    t0 = now_utc()
    r = bob.post("/agent_api_keys", json={"agent_id": a["id"], "name": "short",
                                          "api_key_type": "internal", "ttl_seconds": 3})
    assert r.status_code == 200, r.text
    k = r.json()
    assert TS_RE.match(k["expires_at"]), k
    exp = parse_ts(k["expires_at"])
    assert t0 + datetime.timedelta(seconds=2.5) < exp < t0 + datetime.timedelta(seconds=6)
    when = iso(now_utc() + datetime.timedelta(days=30))
    r = bob.post("/agent_api_keys", json={"agent_id": a["id"], "name": "dated",
                                          "api_key_type": "internal", "expires_at": when})
    assert r.status_code == 200, r.text
    assert r.json()["expires_at"] == when
    # an offset is accepted and answered in UTC
    r = bob.post("/agent_api_keys", json={"agent_id": a["id"], "name": "offset",
                                          "api_key_type": "internal",
                                          "expires_at": "2031-06-01T12:00:00+02:00"})
    assert r.status_code == 200 and r.json()["expires_at"] == "2031-06-01T10:00:00.000000Z", r.text
    assert bob.get("/agent_api_keys/" + k["id"]).json()["expires_at"] == k["expires_at"]

    agent = agent_key_client(srv, k["api_key"])
    assert agent.get("/agents/" + a["id"]).status_code == 200
    wait_until(exp)
    # from that instant: refused everywhere, exactly like a key that never existed
    r = agent.get("/agents/" + a["id"])
    same_404(r, agent_key_client(srv, "kw_" + "B" * 43).get("/agents/" + a["id"]))
    assert r.status_code == 401 and r.json() == UNAUTH
    r = agent_key_client(srv, k["api_key"], scheme="AgentKey").get("/agents")
    assert r.status_code == 401
    # the row stays (listed, readable) until deleted
    assert bob.get("/agent_api_keys/" + k["id"]).status_code == 200


# ---------------------------------------------------------------------------------------------
# 2. Rotation


def rotate(client, key_id, grace=None, **kw):
    body = {} if grace is None else {"grace_period_seconds": grace}
    return client.post("/agent_api_keys/%s/rotate" % key_id, json=body, **kw)


def test_rotate_grace_zero_and_grace_period(srv, tenant):
    bob = tenant.user("bob")
    a = bob.create_agent("rot")
    k = bob.create_key(a["id"], "r", api_key_type="internal")
    old = k["api_key"]
    r = rotate(bob, k["id"])
    assert r.status_code == 200, r.text
    assert r.headers.get("Cache-Control") == "no-store"
    n = r.json()
    assert n["id"] == k["id"] and n["name"] == "r" and n["agent_id"] == a["id"]
    assert n["created_at"] == k["created_at"] and n["api_key_type"] == "internal"
    assert KEY_RE.match(n["api_key"]) and n["api_key"] != old
    assert n["previous_api_key_valid_until"] is None
    assert agent_key_client(srv, old).get("/agents").status_code == 401  # at once
    assert agent_key_client(srv, n["api_key"]).get("/agents/" + a["id"]).status_code == 200
    # the secret is never read back
    assert "api_key" not in bob.get("/agent_api_keys/" + k["id"]).json()

    # an empty body is {} (grace 0)
    r = bob.post("/agent_api_keys/%s/rotate" % k["id"])
    assert r.status_code == 200, r.text
    cur = r.json()["api_key"]
    assert agent_key_client(srv, n["api_key"]).get("/agents").status_code == 401

    r = rotate(bob, k["id"], grace=3)
    assert r.status_code == 200, r.text
    g = r.json()
    until = parse_ts(g["previous_api_key_valid_until"])
    assert now_utc() < until < now_utc() + datetime.timedelta(seconds=4)
    assert agent_key_client(srv, cur).get("/agents/" + a["id"]).status_code == 200
    assert agent_key_client(srv, g["api_key"]).get("/agents/" + a["id"]).status_code == 200
    wait_until(until)
    r = agent_key_client(srv, cur).get("/agents/" + a["id"])
    same_404(r, agent_key_client(srv, "kw_" + "C" * 43).get("/agents/" + a["id"]))
    assert agent_key_client(srv, g["api_key"]).get("/agents/" + a["id"]).status_code == 200


def test_rotate_rules_collapse_and_validation(srv, tenant, new_tenant):
    bob, dave, gina = tenant.user("bob"), tenant.user("dave"), tenant.user("gina")
    a = bob.create_agent("rot-rules")
    k = bob.create_key(a["id"], "r", api_key_type="internal")
    # 422s, before anything else; nothing changes
    for body in ({"grace_period_seconds": -1}, {"grace_period_seconds": 604801},
                 {"grace_period_seconds": "5"}, {"grace_period_seconds": 1.5}, [1], "x"):
        r = bob.post("/agent_api_keys/%s/rotate" % k["id"], json=body)
        assert r.status_code == 422, (body, r.text)
    assert agent_key_client(srv, k["api_key"]).get("/agents").status_code == 200
    # 404 collapse: unreadable == absent == not a UUID, byte for byte
    other = new_tenant("globex").user("alice")
    absent = "01900000-0000-7000-8000-000000000000"
    r1 = rotate(other, k["id"])
    same_404(r1, rotate(other, absent))
    same_404(r1, rotate(other, "not-a-uuid"))
    assert r1.status_code == 404 and r1.json() == KEY_404
    # dave cannot read this key: 404; give him viewer on the agent and the key: he reads
    # it, may not update it: 403
    assert rotate(dave, k["id"]).status_code == 404
    tenant.admin.touch(("agent_api_key:" + k["id"], "viewer", "user:" + tenant.uid("dave")),
                       ("agent:" + a["id"], "viewer", "user:" + tenant.uid("dave")))
    r = rotate(dave, k["id"])
    assert r.status_code == 403, r.text
    assert agent_key_client(srv, k["api_key"]).get("/agents").status_code == 200
    # an agent key may not rotate keys (no update)
    r = rotate(agent_key_client(srv, k["api_key"]), k["id"])
    assert r.status_code in (403, 404), r.text
    assert rotate(Client(srv), k["id"]).status_code == 401
    # github/slack: rotated (sealed anew), but no grace
    gh = bob.create_key(a["id"], "gh", api_key_type="github")
    r = rotate(bob, gh["id"], grace=10)
    assert r.status_code == 422, r.text
    r = rotate(bob, gh["id"])
    assert r.status_code == 200 and r.json()["api_key"] != gh["api_key"], r.text
    assert gina.get("/agent_api_keys/" + gh["id"]).status_code in (200, 404)


def test_rotate_races_have_one_clear_winner(srv, tenant):
    bob = tenant.user("bob")
    a = bob.create_agent("race")
    k = bob.create_key(a["id"], "r", api_key_type="internal")
    results = []
    barrier = threading.Barrier(8)

    def go():
        c = tenant.user("bob")
        barrier.wait()
        results.append(rotate(c, k["id"]))

    th = [threading.Thread(target=go) for _ in range(8)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert set(codes) <= {200, 409}, [(r.status_code, r.text) for r in results]
    winners = [r.json()["api_key"] for r in results if r.status_code == 200]
    assert winners
    for r in results:
        if r.status_code == 409:
            assert "rotated" in r.json()["detail"]
    # exactly one secret works: the last committed rotation's; the others and the original
    # never do (grace 0)
    works = [s for s in winners + [k["api_key"]]
             if agent_key_client(srv, s).get("/agents").status_code == 200]
    assert len(works) == 1, (codes, len(works))

    # rotation racing a delete: whichever commits first wins; never a live key afterwards
    for i in range(4):
        k2 = bob.create_key(a["id"], "rd%d" % i, api_key_type="internal")
        out = {}
        b2 = threading.Barrier(2)

        def rot():
            c = tenant.user("bob")
            b2.wait()
            out["rot"] = rotate(c, k2["id"])

        def dele():
            c = tenant.user("bob")
            b2.wait()
            out["del"] = c.delete("/agent_api_keys/" + k2["id"])

        ts = [threading.Thread(target=rot), threading.Thread(target=dele)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert out["del"].status_code == 200, out["del"].text
        assert out["rot"].status_code in (200, 404), out["rot"].text
        if out["rot"].status_code == 404:
            assert out["rot"].json() == KEY_404
        for s in [k2["api_key"]] + ([out["rot"].json()["api_key"]]
                                     if out["rot"].status_code == 200 else []):
            assert agent_key_client(srv, s).get("/agents").status_code == 401
        assert bob.get("/agent_api_keys/" + k2["id"]).status_code == 404


# ---------------------------------------------------------------------------------------------
# 3. last_used_at


def test_last_used_at_coalesced_flushed_and_kept_over_a_restart(tmp_path):
    s = Server(tmp_path / "lu", env_extra={"KEYWARD_LAST_USED_FLUSH_MS": "200"})
    s.start()
    try:
        adm = Admin(s, s.token("root", admin=True))
        t = Tenant(s, adm)
        bob = t.user("bob")
        a = bob.create_agent("lu")
        k = bob.create_key(a["id"], "k", api_key_type="internal")
        assert k["last_used_at"] is None
        assert bob.get("/agent_api_keys/" + k["id"]).json()["last_used_at"] is None
        t0 = now_utc()
        agent = agent_key_client(s, k["api_key"])
        for _ in range(20):
            assert agent.get("/agents/" + a["id"]).status_code == 200
        seen = bob.get("/agent_api_keys/" + k["id"]).json()["last_used_at"]
        assert seen is not None and parse_ts(seen) >= t0 - datetime.timedelta(seconds=1)
        time.sleep(0.6)  # a few flush intervals
        m = requests.get(s.url + "/metrics").text
        flushed = re.search(r"^keyward_last_used_flushed_total (\d+)$", m, re.M)
        assert flushed and int(flushed.group(1)) >= 1, m
        assert re.search(r"^keyward_last_used_pending 0$", m, re.M), m
        # listed too
        r = bob.get("/agent_api_keys?agent_id=" + a["id"])
        assert r.json()[0]["last_used_at"] == seen
    finally:
        s.stop()
    s.start()  # the same database: the flushed value is the row's
    try:
        bob = Client(s, s.token(t.uid("bob"), account=t.account))
        assert bob.get("/agent_api_keys/" + k["id"]).json()["last_used_at"] == seen
    finally:
        s.stop()


def test_last_used_at_crash_loses_at_most_the_window(tmp_path):
    s = Server(tmp_path / "lu2", env_extra={"KEYWARD_LAST_USED_FLUSH_MS": "3600000"})
    s.start()
    try:
        adm = Admin(s, s.token("root", admin=True))
        t = Tenant(s, adm)
        bob = t.user("bob")
        a = bob.create_agent("lu2")
        k = bob.create_key(a["id"], "k", api_key_type="internal")
        k2 = bob.create_key(a["id"], "k2", api_key_type="internal")
        assert agent_key_client(s, k["api_key"]).get("/agents").status_code == 200
        assert bob.get("/agent_api_keys/" + k["id"]).json()["last_used_at"] is not None
    finally:
        s.kill()  # SIGKILL: the pending window is lost (documented)
    s.start()
    try:
        bob = Client(s, s.token(t.uid("bob"), account=t.account))
        assert bob.get("/agent_api_keys/" + k["id"]).json()["last_used_at"] is None
        # and a clean stop keeps it
        assert agent_key_client(s, k2["api_key"]).get("/agents").status_code == 200
    finally:
        s.stop()
    s.start()
    try:
        bob = Client(s, s.token(t.uid("bob"), account=t.account))
        assert bob.get("/agent_api_keys/" + k2["id"]).json()["last_used_at"] is not None
    finally:
        s.stop()


# ---------------------------------------------------------------------------------------------
# 5. Cursors


def walk(client, path, limit):
    """Follows X-Next-Cursor from `cursor=` to the end; returns (items, pages)."""
    items, pages, cur = [], 0, ""
    while True:
        sep = "&" if "?" in path else "?"
        r = client.get("%s%slimit=%d&cursor=%s" % (path, sep, limit, cur))
        assert r.status_code == 200, r.text
        pages += 1
        items += r.json()
        cur = r.headers.get("X-Next-Cursor")
        if cur is None:
            return items, pages
        assert len(r.json()) == limit
        assert pages < 100


def test_key_cursor_pages_match_page_numbers(tenant):
    bob, dave = tenant.user("bob"), tenant.user("dave")
    a = bob.create_agent("cur")
    made = [bob.create_key(a["id"], "k%02d" % i, api_key_type="internal") for i in range(7)]
    path = "/agent_api_keys?agent_id=" + a["id"]
    items, pages = walk(bob, path, 3)
    assert pages == 3 and [x["id"] for x in items] == [k["id"] for k in made]
    by_page = []
    for p in (1, 2, 3):
        by_page += bob.get(path + "&limit=3&page_number=%d" % p).json()
    assert by_page == items
    # an exact multiple: the last page carries no cursor
    items6, pages6 = walk(bob, path, 7)
    assert pages6 == 1 and len(items6) == 7
    # page_number responses are unchanged: no cursor header
    assert "X-Next-Cursor" not in bob.get(path + "&limit=3").headers
    # a sparse reader: dave reads only keys he is viewer of
    for k in made[1::3]:
        tenant.admin.touch(("agent_api_key:" + k["id"], "viewer", "user:" + tenant.uid("dave")))
    tenant.admin.touch(("agent:" + a["id"], "viewer", "user:" + tenant.uid("dave")))
    items_d, _ = walk(dave, path, 1)
    assert [x["id"] for x in items_d] == [k["id"] for k in made[1::3]]


def test_cursor_forged_foreign_or_mixed_is_422(tenant):
    bob, gina = tenant.user("bob"), tenant.user("gina")
    a = bob.create_agent("cur-bad")
    b = bob.create_agent("cur-bad2")
    for i in range(3):
        bob.create_key(a["id"], "k%d" % i, api_key_type="internal")
        bob.create_key(b["id"], "k%d" % i, api_key_type="internal")
    path = "/agent_api_keys?agent_id=" + a["id"]
    cur = bob.get(path + "&limit=1&cursor=").headers["X-Next-Cursor"]
    flipped = cur[:-3] + ("A" if cur[-3] != "A" else "B") + cur[-2:]
    bad = [flipped, cur[:-1], cur + "A", "x", "%zz",
           bob.get("/agent_api_keys?agent_id=%s&limit=1&cursor=" % b["id"]).headers[
               "X-Next-Cursor"],  # another agent's list
           bob.get("/agents?limit=1&cursor=").headers.get("X-Next-Cursor") or "y"]
    for c in bad:
        r = bob.get(path + "&limit=1&cursor=" + c)
        assert r.status_code == 422, (c, r.text)
    # another caller's cursor (gina reads the agent's keys as a member? she is not the owner:
    # give her editor so she can list) is refused too
    tenant.admin.touch(("agent:" + a["id"], "editor", "user:" + tenant.uid("gina")))
    r = gina.get(path + "&limit=1&cursor=" + cur)
    assert r.status_code == 422, r.text
    r = bob.get(path + "&limit=1&page_number=1&cursor=")
    assert r.status_code == 422 and "not both" in r.json()["detail"]
    r = bob.get("/agents?limit=1&page_number=2&cursor=")
    assert r.status_code == 422


def test_agent_cursor_pages(tenant):
    erin = tenant.user("erin")
    made = [erin.create_agent("ca%02d" % i) for i in range(5)]
    mine = {a["id"] for a in made}
    items, pages = walk(erin, "/agents", 2)
    got = [x["id"] for x in items if x["id"] in mine]
    assert got == [a["id"] for a in made]
    by_page = []
    p = 1
    while True:
        r = erin.get("/agents?limit=2&page_number=%d" % p).json()
        if not r:
            break
        by_page += r
        p += 1
    assert by_page == items
    # a forged or another caller's cursor: 422; nothing readable: [] and no cursor
    cur = erin.get("/agents?limit=1&cursor=").headers["X-Next-Cursor"]
    bad = cur[:-2] + ("AA" if cur[-2:] != "AA" else "BB")
    assert erin.get("/agents?limit=1&cursor=" + bad).status_code == 422
    assert tenant.user("dave").get("/agents?limit=1&cursor=" + cur).status_code == 422
    nobody = tenant.user("nobody-" + tenant.account, account=None)
    r = nobody.get("/agents?limit=5&cursor=")
    assert r.status_code == 200 and r.json() == [] and "X-Next-Cursor" not in r.headers


# ---------------------------------------------------------------------------------------------
# 4. POST /auth/verify


def verifier(server, tenant, name="gateway"):
    sub = "%s-%s" % (name, tenant.account)
    tenant.admin.touch(("account:" + tenant.account, "verifier", "service_account:" + sub))
    return Client(server, server.token(sub, principal_type="service_account"), sub=sub)


def test_verify_key_with_50_checks(srv, tenant, new_tenant):
    bob = tenant.user("bob")
    svc = verifier(srv, tenant)
    agents = [bob.create_agent("v%02d" % i) for i in range(25)]
    k = bob.create_key(agents[0]["id"], "v", api_key_type="internal")
    checks = []
    for i, a in enumerate(agents):
        checks.append({"resource": "agent:" + a["id"], "permission": "read"})
        checks.append({"resource": "agent:" + a["id"], "permission": "update"})
    assert len(checks) == 50
    r = svc.post("/auth/verify", json={"api_key": k["api_key"], "checks": checks})
    assert r.status_code == 200, r.text
    assert r.headers.get("X-Keyward-Revision", "").isdigit()
    body = r.json()
    assert body["valid"] is True
    p = body["principal"]
    assert p["type"] == "agent" and p["id"] == agents[0]["id"]
    assert p["subject"] == "agent:" + agents[0]["id"] and p["account_id"] == tenant.account
    assert p["key_id"] == k["id"] and p["key_in_grace"] is False
    assert len(body["checks"]) == 50
    for i, c in enumerate(body["checks"]):
        assert c["resource"] == checks[i]["resource"] and c["permission"] == checks[i]["permission"]
        # the agent reads only itself (self) and updates nothing
        assert c["allowed"] is (i == 0), (i, c)
    # invalid, unknown and too-long keys: {"valid": false}, nothing else
    for bad in ("kw_" + "Z" * 43, "short", "x" * 600):
        r = svc.post("/auth/verify", json={"api_key": bad, "checks": checks[:2]})
        assert r.status_code == 200 and r.json() == {"valid": False}, r.text
    # a key of an account the service may not verify: the same answer
    other = new_tenant("globex").user("bob")
    ok = other.create_key(other.create_agent("o")["id"], "o", api_key_type="internal")
    r = svc.post("/auth/verify", json={"api_key": ok["api_key"]})
    assert r.json() == {"valid": False}
    # unknown permission in a check: answered per check, not a failure
    r = svc.post("/auth/verify", json={"api_key": k["api_key"], "checks": [
        {"resource": "agent:" + agents[0]["id"], "permission": "nope"}]})
    assert r.status_code == 200 and r.json()["checks"][0]["allowed"] is False, r.text


def test_verify_token_rules_and_422s(srv, tenant):
    svc = verifier(srv, tenant, "gw2")
    tok = srv.token(tenant.uid("bob"), account=tenant.account)
    r = svc.post("/auth/verify", json={"token": tok, "checks": [
        {"resource": "account:" + tenant.account, "permission": "create_agent"}]})
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["valid"] and b["principal"]["type"] == "user"
    assert b["principal"]["id"] == tenant.uid("bob") and b["checks"][0]["allowed"] is True
    # no account claim, or another account: not verifiable by this service
    assert svc.post("/auth/verify", json={"token": srv.token(tenant.uid("bob"))}).json() == \
        {"valid": False}
    assert svc.post("/auth/verify", json={"token": srv.token("x", account="elsewhere")}).json() \
        == {"valid": False}
    assert svc.post("/auth/verify", json={"token": "garbage"}).json() == {"valid": False}
    # the caller must be a service_account
    for c in (tenant.user("alice"), ):
        r = c.post("/auth/verify", json={"token": tok})
        assert r.status_code == 403, r.text
    assert Client(srv).post("/auth/verify", json={"token": tok}).status_code == 401
    # 422s
    many = [{"resource": "agent:x", "permission": "read"}] * 101
    for body in ({}, {"token": tok, "api_key": "kw_x"}, {"token": 5},
                 {"token": tok, "checks": many}, {"token": tok, "checks": "x"},
                 {"token": tok, "checks": [{"resource": "agentx", "permission": "read"}]},
                 {"token": tok, "checks": [{"resource": "agent:x"}]}, [1]):
        r = svc.post("/auth/verify", json=body)
        assert r.status_code == 422, (body, r.text)


def test_verify_rate_limits_invalid_attempts(tmp_path):
    s = Server(tmp_path / "rl", env_extra={"KEYWARD_VERIFY_INVALID_PER_PREFIX": "3",
                                           "KEYWARD_VERIFY_INVALID_PER_SERVICE": "5"})
    s.start()
    try:
        adm = Admin(s, s.token("root", admin=True))
        t = Tenant(s, adm)
        svc = verifier(s, t)
        bob = t.user("bob")
        k = bob.create_key(bob.create_agent("rl")["id"], "k", api_key_type="internal")
        for i in range(3):
            r = svc.post("/auth/verify", json={"api_key": "kw_AAAAA-guess-%d-xxxxxxxx" % i})
            assert r.json() == {"valid": False}
        r = svc.post("/auth/verify", json={"api_key": "kw_AAAAA-guess-9-xxxxxxxx"})
        assert r.status_code == 429, r.text
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        # another prefix still answers, a valid key too, until the service's own limit
        for i in range(2):
            assert svc.post("/auth/verify", json={"api_key": "zz%d-other-prefix-xx" % i}).json() \
                == {"valid": False}
        r = svc.post("/auth/verify", json={"api_key": k["api_key"]})
        assert r.status_code == 429, r.text  # 5 invalid: this service is limited
        # another service is not
        svc2 = verifier(s, t, "other")
        assert svc2.post("/auth/verify", json={"api_key": k["api_key"]}).json()["valid"] is True
        m = requests.get(s.url + "/metrics").text
        assert 'keyward_verify_rate_limited_total{scope="prefix"} 1' in m, m
        assert 'keyward_verify_rate_limited_total{scope="service"} 1' in m, m
        assert 'keyward_verify_total{result="invalid"} 5' in m, m
        assert 'keyward_verify_total{result="valid"} 1' in m, m
    finally:
        s.stop()
    assert "AAAAA-guess" not in open(s.stderr_path).read()


def test_verify_refuses_expired_and_grace_ended_keys(srv, tenant):
    svc = verifier(srv, tenant, "gw3")
    bob = tenant.user("bob")
    a = bob.create_agent("vexp")
    r = bob.post("/agent_api_keys", json={"agent_id": a["id"], "name": "e",
                                          "api_key_type": "internal", "ttl_seconds": 3})
    k = r.json()
    assert svc.post("/auth/verify", json={"api_key": k["api_key"]}).json()["valid"] is True
    wait_until(parse_ts(k["expires_at"]))
    assert svc.post("/auth/verify", json={"api_key": k["api_key"]}).json() == {"valid": False}
    k2 = bob.create_key(a["id"], "g", api_key_type="internal")
    g = rotate(bob, k2["id"], grace=3).json()
    v = svc.post("/auth/verify", json={"api_key": k2["api_key"]}).json()
    assert v["valid"] is True and v["principal"]["key_in_grace"] is True
    wait_until(parse_ts(g["previous_api_key_valid_until"]))
    assert svc.post("/auth/verify", json={"api_key": k2["api_key"]}).json() == {"valid": False}


# ---------------------------------------------------------------------------------------------
# Two instances over one PostgreSQL database


@pytest.mark.skipif(not pg_mode(), reason="several instances need PostgreSQL")
def test_expiry_and_rotation_across_two_instances(tmp_path):
    a = Server(tmp_path / "a")
    a.start()
    b = Server(tmp_path / "b", db=a.db, secret=a.secret)
    b.start()
    try:
        adm = Admin(a, a.token("root", admin=True))
        t = Tenant(a, adm)
        bob_a = t.user("bob")
        ag = bob_a.create_agent("two")
        r = bob_a.post("/agent_api_keys", json={"agent_id": ag["id"], "name": "e",
                                                "api_key_type": "internal", "ttl_seconds": 3})
        k = r.json()
        rev = r.headers["X-Keyward-Revision"]
        on_b = agent_key_client(b, k["api_key"])
        assert on_b.get("/agents/" + ag["id"], headers={"X-Keyward-Revision": rev}).status_code \
            == 200
        wait_until(parse_ts(k["expires_at"]))
        same_404(on_b.get("/agents/" + ag["id"]),
                 agent_key_client(b, "kw_" + "D" * 43).get("/agents/" + ag["id"]))
        assert agent_key_client(a, k["api_key"]).get("/agents").status_code == 401

        k2 = bob_a.create_key(ag["id"], "r", api_key_type="internal")
        r = rotate(bob_a, k2["id"])
        assert r.status_code == 200
        new = r.json()["api_key"]
        # refused on B at once (the row is read at every authentication)
        assert agent_key_client(b, k2["api_key"]).get("/agents").status_code == 401
        assert agent_key_client(b, new).get("/agents").status_code == 200
        # B authorizes the rotation on its graph: it must have applied the key's creation and
        # first rotation (instances follow each other; the revision says what to wait for)
        r = rotate(Client(b, b.token(t.uid("bob"), account=t.account)), k2["id"], grace=3,
                   headers={"X-Keyward-Revision": r.headers["X-Keyward-Revision"]})
        assert r.status_code == 200, r.text
        newer = r.json()
        assert agent_key_client(a, new).get("/agents").status_code == 200
        wait_until(parse_ts(newer["previous_api_key_valid_until"]))
        assert agent_key_client(a, new).get("/agents").status_code == 401
        assert agent_key_client(b, new).get("/agents").status_code == 401
        assert agent_key_client(a, newer["api_key"]).get("/agents").status_code == 200
        # concurrent rotations on A and B: one clear winner
        out = []
        bar = threading.Barrier(2)

        def go(srv_):
            c = Client(srv_, srv_.token(t.uid("bob"), account=t.account))
            bar.wait()
            out.append(rotate(c, k2["id"]))

        ts = [threading.Thread(target=go, args=(x,)) for x in (a, b)]
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        assert sorted(r.status_code for r in out) in ([200, 200], [200, 409]), \
            [(r.status_code, r.text) for r in out]
        live = [r.json()["api_key"] for r in out if r.status_code == 200]
        works = [s for s in live if agent_key_client(b, s).get("/agents").status_code == 200]
        assert len(works) == 1
    finally:
        b.kill()
        a.kill()


def test_schema_without_verify_or_key_update(tmp_path):
    """A custom schema may leave out account#verify and agent_api_key#update: then nobody
    verifies (every answer {"valid": false}) and nobody rotates (403), instead of a 500."""
    from conftest import DEFAULT_SCHEMA
    text = open(DEFAULT_SCHEMA).read()
    text = text.replace("    relation verifier: service_account\n", "")
    text = text.replace("    permission verify = verifier\n", "")
    text = text.replace("    permission update = (owner + editor) & parent_agent->update & "
                        "tenant_gate\n", "")
    assert "permission verify" not in text and "relation verifier" not in text
    schema = tmp_path / "no-verify.zed"
    schema.write_text(text)
    s = Server(tmp_path / "nv", extra_args=["--schema", str(schema)])
    s.start()
    try:
        adm = Admin(s, s.token("root", admin=True))
        t = Tenant(s, adm)
        bob = t.user("bob")
        k = bob.create_key(bob.create_agent("nv")["id"], "k", api_key_type="internal")
        svc = Client(s, s.token("gw", principal_type="service_account"))
        r = svc.post("/auth/verify", json={"api_key": k["api_key"]})
        assert r.status_code == 200 and r.json() == {"valid": False}, r.text
        r = rotate(bob, k["id"])
        assert r.status_code == 403, r.text
        assert agent_key_client(s, k["api_key"]).get("/agents").status_code == 200
    finally:
        s.stop()
