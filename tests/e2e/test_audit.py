"""The audit trail (docs/API.md, "Audit events"): an event per mutation, in the same
transaction, hash-chained and checked by `keyward audit verify`; GET /audit_events with
filters and cursor pages, readable by the account's admins (also after the agent or key is
gone) and /v1 administrators; `keyward migrate` and `keyward backup` (docs/DEPLOYMENT.md)."""
import os
import sqlite3
import subprocess
import threading
import time

import pytest

from conftest import (Admin, Client, Server, Tenant, keyward_bin, pg_fresh_db, pg_mode, psql,
                      agent_key_client)


def events(client, **params):
    r = client.get("/audit_events", params=params)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json(), r.headers.get("X-Next-Cursor")


def all_events(client, **params):
    out, cursor = [], ""
    while True:
        page, cursor = events(client, cursor=cursor, **params)
        out += page
        if not cursor:
            return out


def run(*args, env=None, timeout=120):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([keyward_bin()] + list(args), capture_output=True, text=True,
                          timeout=timeout, env=e)


def test_every_mutation_appends_one_event(tenant, admin):
    alice = tenant.user("alice")
    a = alice.create_agent("audited", description="d")
    k = alice.create_key(a["id"], "deploy", api_key_type="internal")
    r = alice.post("/agent_api_keys/%s/rotate" % k["id"], json={"grace_period_seconds": 30})
    assert r.status_code == 200, r.text
    rotated = r.json()["api_key"]
    r = alice.delete("/agent_api_keys/" + k["id"])
    assert r.status_code == 200
    r = alice.delete("/agents/" + a["id"])
    assert r.status_code == 200
    evs = all_events(alice)
    mine = [e for e in evs if e["resource"] in ("agent:" + a["id"], "agent_api_key:" + k["id"])]
    assert [e["action"] for e in mine] == ["agent.create", "key.create", "key.rotate",
                                           "key.delete", "agent.delete"]
    for e in mine:
        assert e["actor"] == "user:" + tenant.uid("alice")
        assert e["account_id"] == tenant.account
        assert len(e["request_id"]) > 0 and len(e["hash"]) == 64
    assert mine[0]["detail"] == {"id": a["id"], "name": "audited", "description": "d"}
    assert mine[1]["detail"] == {"id": k["id"], "agent_id": a["id"], "name": "deploy",
                                 "api_key_type": "internal"}
    assert mine[2]["detail"]["grace_period_seconds"] == 30
    # never a secret
    assert k["api_key"] not in str(evs) and rotated not in str(evs)
    # revisions: each event carries the revision its change committed at
    revs = [e["revision"] for e in mine]
    assert revs == sorted(revs) and len(set(revs)) == len(revs)
    # seq orders them, the chain links them
    seqs = [e["seq"] for e in evs]
    assert seqs == sorted(seqs)


def test_agent_delete_records_a_key_delete_for_each_key_it_takes(tmp_path):
    s = Server(tmp_path / "k").start()
    try:
        adm = Admin(s, s.token("ops", admin=True))
        t = Tenant(s, adm)
        alice = t.user("alice")
        a = alice.create_agent("cascade")
        keys = [alice.create_key(a["id"], "k%d" % i) for i in range(3)]
        kept = alice.create_agent("kept")
        other = alice.create_key(kept["id"], "stays")
        r = alice.delete("/agents/" + a["id"])
        assert r.status_code == 200, r.text
        evs = all_events(alice)
        gone = [e for e in evs if e["action"] == "key.delete"]
        assert sorted(e["resource"] for e in gone) == sorted("agent_api_key:" + k["id"]
                                                             for k in keys)
        (ad,) = [e for e in evs if e["action"] == "agent.delete"]
        for e in gone:
            kid = e["resource"].split(":", 1)[1]
            assert e["detail"] == {"id": kid, "agent_id": a["id"], "via": "agent.delete"}
            assert e["actor"] == ad["actor"] and e["request_id"] == ad["request_id"]
            assert e["account_id"] == t.account and e["revision"] == ad["revision"]
        # each key's own history ends with its deletion; the other agent's key has none
        for k in keys:
            mine = all_events(alice, resource="agent_api_key:" + k["id"])
            assert [e["action"] for e in mine] == ["key.create", "key.delete"]
        assert [e["action"] for e in all_events(alice, resource="agent_api_key:" + other["id"])] \
            == ["key.create"]
    finally:
        s.stop()
    r = run("audit", "verify", "--db", db_of(s))
    assert r.returncode == 0, r.stdout + r.stderr
    # the tenant, 2 agents, 4 keys, the agent.delete and its 3 key.deletes
    assert "intact: 11 events" in r.stdout, r.stdout


def test_v1_writes_deletes_and_schema_are_audited(srv, admin):
    sfx = os.urandom(4).hex()
    r = admin.write([{"operation": "OPERATION_TOUCH", "relationship": {
        "resource": {"objectType": "account", "objectId": "v1-" + sfx}, "relation": "member",
        "subject": {"object": {"objectType": "user", "objectId": "u-" + sfx}}}}])
    r = admin.post("/v1/relationships/delete", json={"relationshipFilter": {
        "resourceType": "account", "optionalResourceId": "v1-" + sfx}})
    assert r.status_code == 200, r.text
    schema = admin.post("/v1/schema/read", json={}).json()["schemaText"]
    r = admin.post("/v1/schema/write", json={"schema": schema})
    assert r.status_code == 200, r.text
    evs = all_events(admin, resource="account:v1-" + sfx)
    assert [e["action"] for e in evs] == ["relationships.write", "relationships.delete"]
    assert evs[0]["detail"]["updates"] == [{"operation": "OPERATION_TOUCH",
                                            "relationship": "account:v1-%s#member@user:u-%s"
                                            % (sfx, sfx)}]
    assert evs[1]["detail"]["deleted"] == 1
    assert evs[0]["account_id"] is None and evs[0]["actor"] == "user:root-admin"
    sch = all_events(admin, action="schema.write")
    assert sch and sch[-1]["resource"] == "schema" and len(sch[-1]["detail"]["schema_sha256"]) == 64
    assert int(r.json()["writtenAt"]["token"]) == sch[-1]["revision"]


def test_readers_admins_yes_members_and_other_accounts_no(srv, admin, new_tenant):
    t1, t2 = new_tenant(), new_tenant()
    alice, bob = t1.user("alice"), t1.user("bob")
    a = bob.create_agent("bobs")
    k = bob.create_key(a["id"], "bk")
    # bob (member) may not read the trail; alice (admin) may
    r = bob.get("/audit_events")
    assert r.status_code == 403, r.text
    # the key and its agent are deleted: their events stay readable by the account's admin
    assert bob.delete("/agent_api_keys/" + k["id"]).status_code == 200
    assert bob.delete("/agents/" + a["id"]).status_code == 200
    got = all_events(alice, resource="agent_api_key:" + k["id"])
    assert [e["action"] for e in got] == ["key.create", "key.delete"]
    # another account's admin sees none of them, with or without the filter
    other = t2.user("alice")
    assert all_events(other, resource="agent_api_key:" + k["id"]) == []
    assert all(e["account_id"] == t2.account for e in all_events(other))
    # an admin of t2 naming t1's account in the header is not t1's admin
    sneaky = Client(srv, srv.token(t2.uid("alice")), headers={"x-selected-account-id": t1.account})
    assert sneaky.get("/audit_events").status_code == 403
    # no account selected and not an administrator: 400
    r = Client(srv, srv.token(t1.uid("alice"))).get("/audit_events")
    assert r.status_code == 400
    # an agent key is no auditor
    a2 = alice.create_agent("keyed")
    k2 = alice.create_key(a2["id"], "self")
    assert agent_key_client(srv, k2["api_key"]).get("/audit_events").status_code == 403
    # no credentials: 401
    assert Client(srv).get("/audit_events").status_code == 401


def test_filters_and_cursor_pages(tenant):
    alice, bob = tenant.user("alice"), tenant.user("bob")
    t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    made = [alice.create_agent("f%d" % i) for i in range(5)] + [bob.create_agent("fb")]
    evs = all_events(alice)
    assert len([e for e in evs if e["action"] == "agent.create"]) == 6
    assert [e["resource"] for e in all_events(alice, actor="user:" + tenant.uid("bob"))] == \
        ["agent:" + made[5]["id"]]
    assert len(all_events(alice, action="agent.create", since=t0)) == 6
    assert all_events(alice, until=t0, action="agent.create") == []
    assert len(all_events(alice, resource="agent:" + made[2]["id"])) == 1
    # pages of 2: the same events, no repeats, X-Next-Cursor absent on the last page
    page1, c1 = events(alice, limit=2, action="agent.create")
    assert len(page1) == 2 and c1
    seen, cursor, pages = list(page1), c1, 1
    while cursor:
        page, cursor = events(alice, limit=2, action="agent.create", cursor=cursor)
        seen += page
        pages += 1
    assert pages == 3 and [e["seq"] for e in seen] == [e["seq"] for e in
                                                       all_events(alice, action="agent.create")]
    # cursor= (empty) is the first page
    assert events(alice, limit=2, action="agent.create", cursor="")[0] == page1
    # forged, edited, or used with other filters: 422
    for bad in ("xyz", c1[:-2] + ("AA" if c1[-2:] != "AA" else "BB"), "A" * 200):
        r = alice.get("/audit_events", params={"limit": 2, "action": "agent.create",
                                                "cursor": bad})
        assert r.status_code == 422, (bad, r.text)
    r = alice.get("/audit_events", params={"limit": 2, "action": "agent.delete", "cursor": c1})
    assert r.status_code == 422
    for q in ({"since": "yesterday"}, {"until": "2026-02-30T00:00:00Z"}, {"limit": "0"},
              {"limit": "1001"}):
        assert alice.get("/audit_events", params=q).status_code == 422, q


def db_of(server):
    return server.db if pg_mode() else server.db_path


def tamper(server, sql):
    if pg_mode():
        psql(sql, url=server.db)
    else:
        con = sqlite3.connect(server.db_path)
        con.execute(sql)
        con.commit()
        con.close()


def test_tampered_event_is_detected_by_verify(tmp_path):
    s = Server(tmp_path / "t").start()
    try:
        adm = Admin(s, s.token("ops", admin=True))
        t = Tenant(s, adm)
        alice = t.user("alice")
        for i in range(3):
            alice.create_agent("t%d" % i)
    finally:
        s.stop()
    url = s.db
    r = run("audit", "verify", "--db", url)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "intact: 4 events" in r.stdout
    # an edited event
    tamper(s, "UPDATE audit_events SET actor = 'user:mallory' WHERE seq = 3")
    r = run("audit", "verify", "--db", url)
    assert r.returncode == 1 and "BROKEN at event 3" in r.stdout and "edited" in r.stdout, r.stdout
    tamper(s, "UPDATE audit_events SET actor = 'user:%s' WHERE seq = 3" % t.uid("alice"))
    assert run("audit", "verify", "--db", url).returncode == 0
    # a deleted event
    tamper(s, "DELETE FROM audit_events WHERE seq = 2")
    r = run("audit", "verify", "--db", url)
    assert r.returncode == 1 and "BROKEN at event 2" in r.stdout and "missing" in r.stdout, r.stdout
    # usage
    assert run("audit", "frobnicate").returncode == 2


def test_backup_while_writing(tmp_path):
    if pg_mode():
        pytest.skip("keyward backup copies SQLite databases")
    s = Server(tmp_path / "b").start()
    stop = threading.Event()
    made = []
    try:
        adm = Admin(s, s.token("ops", admin=True))
        t = Tenant(s, adm)
        alice = t.user("alice")

        def writer():
            i = 0
            while not stop.is_set():
                made.append(alice.create_agent("w%d" % i)["id"])
                i += 1

        th = threading.Thread(target=writer)
        th.start()
        while len(made) < 10:
            time.sleep(0.02)
        out = str(tmp_path / "copy.db")
        r = run("backup", "--db", s.db, "--out", out)
        stop.set()
        th.join()
        assert r.returncode == 0, r.stdout + r.stderr
        assert "audit chain intact" in r.stdout
        assert os.stat(out).st_mode & 0o077 == 0
        # refuses to overwrite
        assert run("backup", "--db", s.db, "--out", out).returncode == 1
    finally:
        stop.set()
        s.stop()
    # the copy serves: one committed state, every agent in it has its event
    c = Server(tmp_path / "c", db=out, secret=s.secret).start()
    try:
        cl = Client(c, c.token(t.uid("alice"), account=t.account))
        evs = all_events(cl, action="agent.create")
        rows = cl.get("/agents", params={"limit": 1000}).json()
        assert len(rows) == len(evs) >= 10
        assert run("audit", "verify", "--db", "sqlite:" + out).returncode == 0
    finally:
        c.stop()


def test_migrate_round_trip(tmp_path):
    """sqlite -> postgres -> sqlite in PostgreSQL mode (sqlite -> sqlite -> sqlite without):
    every row, the secrets as sealed, the audit chain and the revision survive; a key made
    before still authenticates; a non-empty target is refused."""
    src = Server(tmp_path / "src", db=str(tmp_path / "src.db")).start()
    try:
        adm = Admin(src, src.token("ops", admin=True))
        t = Tenant(src, adm)
        alice = t.user("alice")
        a = alice.create_agent("mover")
        # the webhook relay's endpoint travels with the agent (the replay table does not)
        r = alice.req("PATCH", "/agents/" + a["id"], json={"acp_url": "http://127.0.0.1:9/acp"})
        assert r.status_code == 200, r.text
        k = alice.create_key(a["id"], "internal-key", api_key_type="internal")
        g = alice.create_key(a["id"], "gh", api_key_type="github")
        # the lifecycle travels too: an expiry, and a rotation whose grace is running
        e = alice.post("/agent_api_keys", json={"agent_id": a["id"], "name": "rot",
                                                "api_key_type": "internal", "ttl_seconds": 3600})
        assert e.status_code == 200, e.text
        e = e.json()
        r = alice.post("/agent_api_keys/%s/rotate" % e["id"], json={"grace_period_seconds": 600})
        assert r.status_code == 200, r.text
        e_new = r.json()["api_key"]
        e_view = alice.get("/agent_api_keys/" + e["id"]).json()
        rev = int(alice.get("/agents/" + a["id"]).headers["X-Keyward-Revision"])
        before = all_events(alice)
    finally:
        src.stop()
    mid = pg_fresh_db() if pg_mode() else "sqlite:" + str(tmp_path / "mid.db")
    dst = "sqlite:" + str(tmp_path / "dst.db")
    r = run("migrate", "--from", src.db, "--to", mid)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verified" in r.stdout and "revision %d" % rev in r.stdout, r.stdout
    r = run("migrate", "--from", mid, "--to", dst)
    assert r.returncode == 0, r.stdout + r.stderr
    # refuses a non-empty target, changing nothing
    r = run("migrate", "--from", src.db, "--to", mid)
    assert r.returncode == 1 and "not empty" in r.stderr, r.stderr
    assert run("audit", "verify", "--db", dst).returncode == 0
    # the copy serves the same data with the same secrets (the master key came along in
    # its meta row; the token secret is the environment's, as for the source)
    out = Server(tmp_path / "dst", db=str(tmp_path / "dst.db"), secret=src.secret).start()
    try:
        alice2 = Client(out, out.token(t.uid("alice"), account=t.account))
        got = alice2.get("/agents/" + a["id"])
        assert got.status_code == 200 and got.json()["name"] == "mover"
        assert got.json()["acp_url"] == "http://127.0.0.1:9/acp"
        assert int(got.headers["X-Keyward-Revision"]) == rev
        keyc = agent_key_client(out, k["api_key"])
        assert keyc.get("/agents/" + a["id"]).status_code == 200
        assert alice2.get("/agent_api_keys/" + g["id"]).status_code == 200
        assert alice2.get("/agent_api_keys/" + e["id"]).json()["expires_at"] == e_view["expires_at"]
        for secret in (e["api_key"], e_new):  # the old one is within its grace
            assert agent_key_client(out, secret).get("/agents/" + a["id"]).status_code == 200
        assert all_events(alice2) == before
    finally:
        out.stop()
    # usage errors
    assert run("migrate", "--from", dst).returncode == 2
    assert run("migrate", "--from", dst, "--to", dst).returncode == 2


def test_two_instances_append_one_chain(tmp_path):
    """PostgreSQL: two instances over one database write at once; their events form one
    intact chain, one event per write."""
    if not pg_mode():
        pytest.skip("several instances share a PostgreSQL database only")
    s1 = Server(tmp_path / "i1").start()
    s2 = Server(tmp_path / "i2", db=s1.db, secret=s1.secret).start()
    try:
        adm = Admin(s1, s1.token("ops", admin=True))
        t = Tenant(s1, adm)
        errors = []
        # the second instance has applied the tenant's relationships once alice may audit
        probe = Client(s2, s2.token(t.uid("alice"), account=t.account))
        deadline = time.time() + 10
        while probe.get("/audit_events").status_code != 200 and time.time() < deadline:
            time.sleep(0.05)

        def writer(server, prefix):
            c = Client(server, server.token(t.uid("alice"), account=t.account))
            for i in range(15):
                r = c.post("/agents", json={"name": "%s%d" % (prefix, i)})
                if r.status_code != 200:
                    errors.append(r.text)

        ths = [threading.Thread(target=writer, args=(s, p)) for s, p in
               ((s1, "a"), (s2, "b"), (s1, "c"), (s2, "d"))]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        assert errors == []
        alice = Client(s2, s2.token(t.uid("alice"), account=t.account))
        assert len(all_events(alice, action="agent.create")) == 60
    finally:
        s2.stop()
        s1.stop()
    r = run("audit", "verify", "--db", s1.db)
    assert r.returncode == 0 and "intact: 61 events" in r.stdout, r.stdout + r.stderr


def test_big_v1_write_is_audited_with_a_bounded_detail(admin):
    """400 updates with ~1000-byte ids (under the 1 MiB body cap): the write succeeds, its event lists what fits (with
    the total count and truncated: true), and a long resource is kept whole."""
    sfx = os.urandom(4).hex()
    long_id = ("L" + sfx) * 200
    ups = [{"operation": "OPERATION_TOUCH", "relationship": {
        "resource": {"objectType": "account", "objectId": long_id[:1000]}, "relation": "member",
        "subject": {"object": {"objectType": "user", "objectId": "u%d-%s" % (i, long_id[:900])}}}}
        for i in range(400)]
    r = admin.post("/v1/relationships/write", json={"updates": ups})
    assert r.status_code == 200, r.text[:300]
    evs = all_events(admin, resource="account:" + long_id[:1000])
    assert len(evs) == 1
    d = evs[0]["detail"]
    assert d["count"] == 400 and d["truncated"] is True and 1 <= len(d["updates"]) < 100
    r = run("audit", "verify", "--db", admin.server.db)
    assert r.returncode == 0, r.stdout + r.stderr
