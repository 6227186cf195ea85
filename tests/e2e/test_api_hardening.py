"""Hardening of the agent and key routes against members who mean harm (issue 9, items 3, 5, 8).

- Field limits: a description longer than the cap is a 422 that names the field and the cap,
  and nothing is stored; at the cap it is accepted.
- A page costs `limit` rows: /metrics counts the rows the list routes read from the store
  (keyward_list_rows_loaded_total{route}); a caller who reads many agents with large
  descriptions makes GET /agents?limit=1 read one row, and every page is still the slice of
  the full list in (created_at, id) order.
- By-name routes do the same work for an absent name as for an unreadable one: exactly one
  permission check each (keyward_checks_total), and the same 404 bytes.
- The response that shows a new secret carries Cache-Control: no-store.
- A supplied api_key that is another key's live secret (another tenant's or one's own) gets
  one neutral 422 that says nothing about where it is in use, and nothing is stored.
- A revision beyond every committed one (X-Keyward-Revision, or a v1 ZedToken) is refused at
  once instead of holding a worker for the freshness wait, and 64 of them at the same time do
  not stall another tenant's reads.
"""
import re
import threading
import time

import pytest

from conftest import (AGENT_404, KEY_404, Admin, Client, Server, Tenant, agent_key_client, pg_mode,
                      same_404)

REV = "X-Keyward-Revision"
DESC_CAP = 4096


def metric(server, name, labels=""):
    """The value of one sample of /metrics (labels: the exact text inside the braces)."""
    text = Client(server).get("/metrics").text
    sample = name + ("{%s}" % labels if labels else "")
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return int(float(line.split(" ")[1]))
    raise AssertionError("no sample %s in /metrics" % sample)


def rows_loaded(server, route):
    return metric(server, "keyward_list_rows_loaded_total", 'route="%s"' % route)


def checks(server):
    return sum(metric(server, "keyward_checks_total", 'result="%s"' % r)
               for r in ("allowed", "denied", "error"))


# ---- field limits ----------------------------------------------------------------------------


def test_description_over_the_cap_is_422_and_stores_nothing(tenant):
    bob = tenant.user("bob")
    before = bob.get("/agents?limit=1000").json()
    for desc in ("x" * (DESC_CAP + 1), "\u00e9" * (DESC_CAP + 1), "y" * 900000):
        r = bob.post("/agents", json={"name": "big", "description": desc})
        assert r.status_code == 422, (r.status_code, r.text[:200])
        detail = r.json()["detail"]
        assert "description" in detail and str(DESC_CAP) in detail, detail
    assert bob.get("/agents/name/big").status_code == 404
    assert bob.get("/agents?limit=1000").json() == before
    # the name was never taken; exactly the cap (in code points, not bytes) is accepted
    a = bob.create_agent("big", "\u00e9" * DESC_CAP)
    assert a["description"] == "\u00e9" * DESC_CAP
    assert bob.get("/agents/" + a["id"]).json() == a


def test_name_caps_are_named_in_the_422(tenant):
    bob = tenant.user("bob")
    r = bob.post("/agents", json={"name": "n" * 256})
    assert r.status_code == 422 and "255" in r.json()["detail"], r.text
    a = bob.create_agent("n" * 255)
    r = bob.post("/agent_api_keys", json={"agent_id": a["id"], "name": "k" * 256})
    assert r.status_code == 422 and "255" in r.json()["detail"], r.text


# ---- a page costs `limit` rows ---------------------------------------------------------------


def test_agent_list_loads_only_the_page(new_tenant, srv):
    t = new_tenant("rows")
    alice = t.user("alice")  # account admin: reads every agent of the account
    bob = t.user("bob")
    made = [bob.create_agent("a%03d" % i, "d" * DESC_CAP)["id"] for i in range(60)]
    full = [x["id"] for x in alice.get("/agents?limit=1000").json()]
    assert full == made  # creation order = (created_at, id) order
    for limit, page in ((1, 1), (7, 3), (50, 2), (1000, 1), (10, 7)):
        n0 = rows_loaded(srv, "/agents")
        r = alice.get("/agents?limit=%d&page_number=%d" % (limit, page))
        n1 = rows_loaded(srv, "/agents")
        assert r.status_code == 200, r.text
        want = full[(page - 1) * limit:page * limit]
        assert [x["id"] for x in r.json()] == want, (limit, page)
        # the rows of the page, not the 60 (x 4 KiB) the caller can read
        assert n1 - n0 == len(want), (limit, page, n1 - n0)
    # the descriptions are the stored ones
    assert all(x["description"] == "d" * DESC_CAP for x in alice.get("/agents?limit=3").json())


def test_agent_list_rows_left_out_are_filled_from_the_next_ids(tenant, admin, srv):
    """An id the graph says is readable but that has no row (relationships an administrator
    wrote for an agent that does not exist) is on no page: the pages hold every agent once, in
    order, none repeated on the next page."""
    bob = tenant.user("bob")
    made = [bob.create_agent("g%02d" % i)["id"] for i in range(6)]
    ghost = made[2][:-1] + ("0" if made[2][-1] != "0" else "1")  # sorts next to made[2]
    admin.touch(("agent:" + ghost, "owner", "user:" + tenant.uid("bob")),
                ("agent:" + ghost, "account", "account:" + tenant.account))
    pages = [[x["id"] for x in bob.get("/agents?limit=3&page_number=%d" % p).json()]
             for p in (1, 2, 3)]
    assert pages == [made[:3], made[3:], []], (ghost, pages)


def test_key_list_loads_rows_only_up_to_the_page(tenant, srv):
    bob = tenant.user("bob")
    a = bob.create_agent("keys-rows")
    keys = [bob.create_key(a["id"], "k%02d" % i)["id"] for i in range(40)]
    n0 = rows_loaded(srv, "/agent_api_keys")
    r = bob.get("/agent_api_keys?agent_id=%s&limit=1" % a["id"])
    assert [k["id"] for k in r.json()] == keys[:1]
    assert rows_loaded(srv, "/agent_api_keys") - n0 == 1
    n0 = rows_loaded(srv, "/agent_api_keys")
    r = bob.get("/agent_api_keys?agent_id=%s&limit=5&page_number=2" % a["id"])
    assert [k["id"] for k in r.json()] == keys[5:10]
    assert rows_loaded(srv, "/agent_api_keys") - n0 == 10  # the walk: skip + limit


# ---- absent and unreadable names do the same work --------------------------------------------


def test_by_name_absent_and_unreadable_run_the_same_check(tenant, admin, srv):
    bob, gina = tenant.user("bob"), tenant.user("gina")
    hidden = bob.create_agent("hidden")
    bob.create_key(hidden["id"], "hk")
    shared = bob.create_agent("shared")
    bob.create_key(shared["id"], "hk2")
    admin.touch(("agent:" + shared["id"], "viewer", "user:" + tenant.uid("gina")))
    pairs = [
        ("/agents/name/hidden", "/agents/name/no-such-agent", AGENT_404),
        ("/agent_api_keys/name/hk?agent_name=hidden",
         "/agent_api_keys/name/hk?agent_name=no-such-agent", AGENT_404),
        ("/agent_api_keys/name/hk2?agent_id=" + shared["id"],
         "/agent_api_keys/name/no-such-key?agent_id=" + shared["id"], KEY_404),
    ]
    for unreadable, absent, body in pairs:
        for method in ("GET", "DELETE"):
            if method == "DELETE" and unreadable.startswith("/agents/"):
                continue  # no delete by name for agents
            costs, answers = [], []
            for path in (unreadable, absent):
                c0 = checks(srv)
                answers.append(gina.req(method, path))
                costs.append(checks(srv) - c0)
            same_404(*answers)
            assert answers[0].json() == body
            assert costs[0] == costs[1], (method, unreadable, costs)
    # nothing was deleted
    assert bob.get("/agent_api_keys/name/hk?agent_name=hidden").status_code == 200
    assert bob.get("/agent_api_keys/name/hk2?agent_id=" + shared["id"]).status_code == 200


# ---- secrets ---------------------------------------------------------------------------------


def test_new_secret_response_is_not_cacheable(tenant):
    bob = tenant.user("bob")
    a = bob.create_agent("nostore")
    for typ in ("internal", "external", "github", "slack"):
        r = bob.post("/agent_api_keys", json={"agent_id": a["id"], "name": "n-" + typ,
                                              "api_key_type": typ})
        assert r.status_code == 200 and "api_key" in r.json(), r.text
        assert r.headers.get("Cache-Control") == "no-store", (typ, dict(r.headers))
    r = bob.post("/agent_api_keys", json={"agent_id": a["id"], "name": "supplied",
                                          "api_key": "s" * 32})
    assert r.status_code == 200 and r.headers.get("Cache-Control") == "no-store"


def test_another_tenants_live_secret_gets_a_neutral_answer(tenant, new_tenant):
    bob = tenant.user("bob")
    eve = new_tenant("eve").user("bob")
    mine = bob.create_agent("owner-of-secret")
    secret = "kw_live-" + "Q" * 30
    bob.create_key(mine["id"], "live", api_key_type="internal", api_key=secret)
    theirs = eve.create_agent("thief")
    own_other = bob.create_agent("second")
    answers = []
    for client, agent, typ in ((eve, theirs, "internal"), (eve, theirs, "external"),
                               (bob, own_other, "external"), (bob, mine, "internal")):
        r = client.post("/agent_api_keys", json={"agent_id": agent["id"], "name": "copy",
                                                 "api_key_type": typ, "api_key": secret})
        assert r.status_code == 422, (r.status_code, r.text)
        assert not re.search(r"exist|already|another (agent|tenant|account)|in use", r.text, re.I), \
            r.text
        answers.append(r.content)
    assert len(set(answers)) == 1, answers  # the same bytes for another tenant and one's own
    assert "api_key" in answers[0].decode()
    # nothing was stored, and the secret still authenticates its own agent only
    assert eve.get("/agent_api_keys?agent_id=" + theirs["id"]).json() == []
    assert bob.get("/agent_api_keys?agent_id=" + own_other["id"]).json() == []
    r = agent_key_client(tenant.server, secret).get("/agents/" + mine["id"])
    assert r.status_code == 200
    assert agent_key_client(tenant.server, secret).get("/agents/" + theirs["id"]).json() == AGENT_404
    # a name conflict is still the 409 of the contract
    r = bob.post("/agent_api_keys", json={"agent_id": mine["id"], "name": "live",
                                          "api_key_type": "internal", "api_key": "n" * 40})
    assert r.status_code == 409, r.text


# ---- revisions beyond every committed one ----------------------------------------------------


def test_future_revision_is_refused_at_once(tenant, admin):
    bob = tenant.user("bob")
    r = bob.get("/agents")
    assert r.status_code == 200
    now = int(r.headers[REV])
    for far in (now + 1000000, 2 ** 63 - 1):
        t0 = time.monotonic()
        r = bob.get("/agents", headers={REV: str(far)})
        took = time.monotonic() - t0
        assert r.status_code == 422, (r.status_code, r.text)
        assert r.json() == {"detail": "X-Keyward-Revision is ahead of every committed revision."}
        assert took < 0.5, took  # the freshness wait is 2 s
        # a write presenting it writes nothing
        r = bob.post("/agents", json={"name": "never"}, headers={REV: str(far)})
        assert r.status_code == 422, r.text
        assert bob.get("/agents/name/never").status_code == 404
        # v1: SpiceDB answers an unusable ZedToken OUT_OF_RANGE (11), HTTP 400
        t0 = time.monotonic()
        r = admin.post("/v1/relationships/read", json={
            "consistency": {"atLeastAsFresh": {"token": str(far)}},
            "relationshipFilter": {"resourceType": "account"}})
        assert time.monotonic() - t0 < 0.5
        assert r.status_code == 400, (r.status_code, r.text)
        assert r.json()["code"] == 11, r.text
    # the current revision (and any earlier one) answers at once, as before
    cur = int(bob.get("/agents").headers[REV])
    for ok in (0, cur):
        assert bob.get("/agents", headers={REV: str(ok)}).status_code == 200
    r = admin.post("/v1/relationships/read", json={
        "consistency": {"atLeastAsFresh": {"token": str(cur)}},
        "relationshipFilter": {"resourceType": "account"}})
    assert r.status_code == 200, r.text


def test_many_future_revisions_do_not_stall_other_tenants(tenant, new_tenant):
    """64 requests with a far-future revision at the same time (the default pool has 16
    workers): another tenant's reads keep their pace."""
    attacker = tenant.user("bob")
    victim_t = new_tenant("victim")
    victim = victim_t.user("bob")
    a = victim.create_agent("busy")
    far = str(int(attacker.get("/agents").headers[REV]) + 10 ** 9)
    statuses, stop = [], threading.Event()

    def attack():
        c = Client(attacker.server, headers=dict(attacker.headers))
        while not stop.is_set():
            statuses.append(c.get("/agents", headers={REV: far}).status_code)

    threads = [threading.Thread(target=attack) for _ in range(64)]
    for th in threads:
        th.start()
    try:
        lat = []
        for _ in range(40):
            t0 = time.monotonic()
            r = victim.get("/agents/" + a["id"])
            lat.append(time.monotonic() - t0)
            assert r.status_code == 200, r.text
    finally:
        stop.set()
        for th in threads:
            th.join(30)
    lat.sort()
    # stalled, the median was 3.5 s (docs/BENCHMARKS.md); each attacker request held a
    # worker for the 2 s wait, so even the 90th percentile stays well under it now
    assert lat[len(lat) // 2] < 0.5, lat
    assert lat[len(lat) * 9 // 10] < 1.0, lat
    assert statuses and set(statuses) == {422}, set(statuses)


@pytest.mark.skipif(pg_mode(), reason="needs an instance that never applies a committed "
                    "revision: a second SQLite instance (PostgreSQL instances follow)")
def test_waiting_for_a_revision_holds_no_thread(tmp_path):
    """Requests waiting for a committed revision this instance has not applied park: with 2
    threads and 32 such requests in flight, another tenant is still answered at once, and
    every waiting request ends in 503 "Revision not yet available" at its deadline (issue 9,
    item 3). B shares A's SQLite file but has no follower, so it never applies A's writes."""
    a = Server(tmp_path / "a")
    a.start()
    b = Server(tmp_path / "b", db=a.db_path, secret=a.secret, extra_args=["--threads", "2"],
               env_extra={"KEYWARD_FRESHNESS_TIMEOUT_MS": "3000"})
    b.start()
    try:
        admin_a = Admin(a, a.token("root-admin", admin=True), sub="root-admin")
        admin_b = Admin(b, b.token("root-admin", admin=True), sub="root-admin")
        r = admin_a.post("/v1/relationships/write", json={"updates": [{
            "operation": "OPERATION_TOUCH", "relationship": {
                "resource": {"objectType": "account", "objectId": "wait"}, "relation": "admin",
                "subject": {"object": {"objectType": "user", "objectId": "w"}}}}]})
        assert r.status_code == 200, r.text
        committed = r.headers[REV]
        waiter = Client(b, b.token("w", account="wait"))
        answers = []

        def wait_for_it():
            c = Client(b, headers=dict(waiter.headers))
            t0 = time.monotonic()
            r = c.get("/agents", headers={REV: committed})
            answers.append((r.status_code, r.json().get("detail"), time.monotonic() - t0))

        threads = [threading.Thread(target=wait_for_it) for _ in range(32)]
        for th in threads:
            th.start()
        time.sleep(0.5)  # all 32 are parked by now (the 3 s wait has not ended)
        lat = []
        for _ in range(10):
            t0 = time.monotonic()
            r = admin_b.post("/v1/relationships/read",
                             json={"relationshipFilter": {"resourceType": "account"}})
            lat.append(time.monotonic() - t0)
            assert r.status_code == 200, r.text
        for th in threads:
            th.join(30)
        print("parked waits: other tenant's reads max %.1f ms, median %.1f ms; waiters ended "
              "after %.2f-%.2f s" % (max(lat) * 1000, sorted(lat)[len(lat) // 2] * 1000,
                                     min(t for _, _, t in answers), max(t for _, _, t in answers)))
        # Holding a thread each, 32 waits on 2 threads would stall these reads for seconds.
        assert max(lat) < 1.0, lat
        assert len(answers) == 32
        assert {(s, d) for s, d, _ in answers} == {(503, "Revision not yet available")}, answers
        assert all(2.5 < t < 10 for _, _, t in answers), answers
    finally:
        b.stop()
        a.stop()
