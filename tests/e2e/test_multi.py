"""Several keyward instances over ONE PostgreSQL database (PostgreSQL mode only).

What the tests hold the instances to (issue 4; docs/DEPLOYMENT.md describes the deployment):
- coherence: a write on A is visible (authorized!) on B without any header within 100 ms
  (median of several tries; each within 1.5 s at worst), revocations included;
- X-Keyward-Revision: the revision of A's write presented to B makes B answer with the write
  already applied, on the first request; a revision far in the future is 503 after the
  bounded wait and changes nothing; a malformed one is 422;
- arbitration: the same (agent, name, type) or agent name created at once on A and B gives
  exactly one 200 and one 409;
- /v1 preconditions hold across instances: two writes racing on A and B, each guarded by
  MUST_NOT_MATCH on what the other writes (or both on one marker), never both succeed; a
  delete's optionalLimit counts what the delete removes, whatever B commits meanwhile;
- atomicity under SIGKILL: every create A acknowledged is present afterwards (rows AND
  relationships, via B's API and the database), and nothing is half-written;
- retention: an instance paused past the pruned changelog horizon resyncs by itself and
  never answers from its stale graph meanwhile.
"""
import json
import signal
import statistics
import threading
import time
import uuid

import pytest
import requests

from conftest import (Admin, Client, Server, Tenant, agent_key_client, ndjson, pg_mode,
                      psql, rel)

pytestmark = pytest.mark.skipif(not pg_mode(),
                                reason="several instances need PostgreSQL (KEYWARD_TEST_PG_URL)")

REV = "X-Keyward-Revision"
FRESHNESS_MS = 700  # B's KEYWARD_FRESHNESS_TIMEOUT_MS in these tests (default 2000)


@pytest.fixture
def pair(tmp_path):
    """Two instances A and B over one fresh database, same token secret."""
    a = Server(tmp_path / "a")
    a.start()
    b = Server(tmp_path / "b", db=a.db, secret=a.secret,
               env_extra={"KEYWARD_FRESHNESS_TIMEOUT_MS": str(FRESHNESS_MS)})
    try:
        b.start()
    except BaseException:
        a.kill()
        raise
    yield a, b
    for s in (a, b):
        s.kill()


def rev_of(resp):
    v = resp.headers.get(REV)
    assert v is not None and v.isdigit(), ("no %s header on a success" % REV, resp.status_code,
                                          dict(resp.headers))
    return int(v)


def on(server, client):
    """The same credential as `client`, talking to `server`."""
    c = Client(server, sub=client.sub)
    c.headers = dict(client.headers)
    return c


def wait_status(client, path, want, limit=1.5, headers=None):
    """Polls GET path until it answers `want`; returns the seconds it took (None: never)."""
    t0 = time.monotonic()
    while True:
        r = client.get(path, headers=headers)
        if r.status_code == want:
            return time.monotonic() - t0
        if time.monotonic() - t0 > limit:
            return None
        time.sleep(0.002)


def test_write_on_a_visible_on_b_without_header(pair):
    a, b = pair
    admin_a = Admin(a, a.token("root-admin", admin=True))
    t = Tenant(a, admin_a)
    bob_a = t.user("bob")
    bob_b = on(b, bob_a)

    grants, revokes = [], []
    for i in range(7):
        ag = bob_a.create_agent("vis-%d" % i)
        path = "/agents/" + ag["id"]
        d = wait_status(bob_b, path, 200)
        assert d is not None, "agent created on A not readable on B after 1.5 s (coherence)"
        grants.append(d)
        # the secret of a key made on A opens B too (shared master key, row and graph)
        if i == 0:
            k = bob_a.create_key(ag["id"], "k", api_key_type="internal")
            kc = agent_key_client(b, k["api_key"])
            assert wait_status(kc, path, 200) is not None, "key made on A refused by B"
        # revocation travels too: bob loses the account on A -> B must deny him
        admin_a.remove(("account:" + t.account, "member", "user:" + t.uid("bob")))
        d = wait_status(bob_b, path, 404)
        assert d is not None, "revocation on A still not effective on B after 1.5 s (breach)"
        revokes.append(d)
        admin_a.touch(("account:" + t.account, "member", "user:" + t.uid("bob")))
        assert wait_status(bob_b, path, 200) is not None
    med_g, med_r = statistics.median(grants), statistics.median(revokes)
    print("\nA->B visibility without header: grant median %.1f ms max %.1f ms; revoke median "
          "%.1f ms max %.1f ms" % (med_g * 1e3, max(grants) * 1e3, med_r * 1e3,
                                   max(revokes) * 1e3))
    assert med_g < 0.100 and med_r < 0.100, (
        "median A->B delay over 100 ms (grants %r, revokes %r): is LISTEN/NOTIFY waking the "
        "follower?" % (grants, revokes))


def test_presented_revision_is_honoured_at_once(pair):
    a, b = pair
    admin_a = Admin(a, a.token("root-admin", admin=True))
    admin_b = Admin(b, b.token("root-admin", admin=True))
    t = Tenant(a, admin_a)
    bob_a = t.user("bob")
    bob_b = on(b, bob_a)
    for i in range(10):
        r = bob_a.post("/agents", json={"name": "fresh-%d" % i})
        assert r.status_code == 200, r.text
        ag, rev = r.json(), rev_of(r)
        # no polling: the first request to B with A's revision sees the write
        r = bob_b.get("/agents/" + ag["id"], headers={REV: str(rev)})
        assert r.status_code == 200, ("B answered %d at revision %s although presented %d"
                                      % (r.status_code, r.headers.get(REV), rev))
        assert r.json() == ag
        assert rev_of(r) >= rev
        # the same for a key (two-factor permission over relationships written on A)
        r = bob_a.post("/agent_api_keys", json={"agent_id": ag["id"], "name": "k"})
        assert r.status_code == 200, r.text
        k, rev = r.json(), rev_of(r)
        r = bob_b.get("/agent_api_keys/" + k["id"], headers={REV: str(rev)})
        assert r.status_code == 200, (r.status_code, r.text)
        # and for a revocation: presented its revision, B must already deny
        r = admin_a.post("/v1/relationships/write", json={"updates": [{
            "operation": "OPERATION_DELETE", "relationship": {
                "resource": {"objectType": "agent", "objectId": ag["id"]}, "relation": "owner",
                "subject": {"object": {"objectType": "user", "objectId": t.uid("bob")}}}}]})
        assert r.status_code == 200, r.text
        token = r.json()["writtenAt"]["token"]
        rev = rev_of(r)
        r = bob_b.get("/agents/" + ag["id"], headers={REV: str(rev)})
        assert r.status_code == 404, ("B still grants a revoked owner at presented revision %d"
                                      % rev, r.status_code, r.text)
        # the v1 zedtoken in atLeastAsFresh does the same wait
        r = admin_b.post("/v1/permissions/check", json={
            "consistency": {"atLeastAsFresh": {"token": token}},
            "resource": {"objectType": "agent", "objectId": ag["id"]}, "permission": "delete",
            "subject": {"object": {"objectType": "user", "objectId": t.uid("bob")}}})
        assert r.status_code == 200, r.text
        assert r.json()["permissionship"] == "PERMISSIONSHIP_NO_PERMISSION", r.text


def test_future_revision_is_refused_at_once_and_changes_nothing(pair):
    """A revision beyond the database's current one was committed by no instance: refused at
    once (issue 9, item 3), not after the freshness wait (which only a revision committed
    elsewhere but not yet applied here still gets)."""
    a, b = pair
    admin_b = Admin(b, b.token("root-admin", admin=True))
    t = Tenant(b, admin_b)
    bob_b = t.user("bob")
    r = bob_b.get("/agents")
    assert r.status_code == 200
    far = rev_of(r) + 1000000
    t0 = time.monotonic()
    r = bob_b.get("/agents", headers={REV: str(far)})
    took = time.monotonic() - t0
    assert r.status_code == 422, (r.status_code, r.text)
    assert r.json() == {"detail": "X-Keyward-Revision is ahead of every committed revision."}
    assert took < FRESHNESS_MS / 1000 / 4, took
    # a write presenting it is refused the same way and writes nothing
    r = bob_b.post("/agents", json={"name": "never"}, headers={REV: str(far)})
    assert r.status_code == 422, (r.status_code, r.text)
    assert bob_b.get("/agents/name/never").status_code == 404
    assert psql("SELECT count(*) FROM agents WHERE name = 'never'", url=b.db) == [["0"]]
    # v1 zedtoken far in the future: SpiceDB's OUT_OF_RANGE, at once
    t0 = time.monotonic()
    r = admin_b.post("/v1/relationships/read", json={
        "consistency": {"atLeastAsFresh": {"token": str(far)}},
        "relationshipFilter": {"resourceType": "account"}})
    assert r.status_code == 400 and r.json()["code"] == 11, (r.status_code, r.text)
    assert time.monotonic() - t0 < FRESHNESS_MS / 1000 / 4
    # a revision committed on A is never refused on B
    r = Admin(a, a.token("root-admin", admin=True)).touch(
        ("account:" + t.account, "member", "user:" + t.uid("zed")))
    tok = r.json()["writtenAt"]["token"]
    r = bob_b.get("/agents", headers={REV: tok})
    assert r.status_code == 200 and rev_of(r) >= int(tok), (r.status_code, r.text)
    # malformed revisions are the caller's error
    for bad in ("abc", "-1", "1.5", "0x10", "99999999999999999999999"):
        r = bob_b.get("/agents", headers={REV: bad})
        assert r.status_code == 422, (bad, r.status_code, r.text)
    # a revision already reached answers at once
    r = bob_b.get("/agents", headers={REV: "0"})
    assert r.status_code == 200


def _race(fns):
    """Runs the callables at the same instant (a barrier); returns their results in order."""
    bar = threading.Barrier(len(fns))
    out = [None] * len(fns)

    def run(i):
        bar.wait()
        out[i] = fns[i]()

    ths = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for th in ths:
        th.start()
    for th in ths:
        th.join(30)
    return out


def test_same_name_created_on_both_at_once_one_wins(pair):
    a, b = pair
    admin_a = Admin(a, a.token("root-admin", admin=True))
    t = Tenant(a, admin_a)
    bob_a = t.user("bob")
    bob_b = on(b, bob_a)
    r = bob_a.post("/agents", json={"name": "racer"})
    assert r.status_code == 200
    ag, rev = r.json(), rev_of(r)
    hdr = {REV: str(rev)}
    assert bob_b.get("/agents/" + ag["id"], headers=hdr).status_code == 200
    for i in range(8):
        for typ in ("internal", "github"):
            body = {"agent_id": ag["id"], "name": "dup-%d" % i, "api_key_type": typ}
            ra, rb = _race([lambda: bob_a.post("/agent_api_keys", json=body, headers=hdr),
                            lambda: bob_b.post("/agent_api_keys", json=body, headers=hdr)])
            assert sorted([ra.status_code, rb.status_code]) == [200, 409], (ra.text, rb.text)
        # agent names too (unique per account)
        ra, rb = _race([lambda: bob_a.post("/agents", json={"name": "twin-%d" % i}),
                        lambda: bob_b.post("/agents", json={"name": "twin-%d" % i})])
        assert sorted([ra.status_code, rb.status_code]) == [200, 409], (ra.text, rb.text)
    rows = psql("SELECT name, type, count(*) FROM api_keys GROUP BY name, type "
                "HAVING count(*) > 1", url=a.db)
    assert rows == [], rows
    n = psql("SELECT count(*) FROM api_keys WHERE agent_id = '%s'" % ag["id"], url=a.db)
    assert n == [["16"]], n


def _orphans(db):
    """Rows without their relationships, relationships without their rows (any agent/key)."""
    keys_missing = psql(
        "SELECT k.id, rel FROM api_keys k CROSS JOIN (VALUES ('parent_agent'), ('account'), "
        "('owner')) v(rel) WHERE NOT EXISTS (SELECT 1 FROM relationships r WHERE "
        "r.resource_type = 'agent_api_key' AND r.resource_id = k.id AND r.relation = v.rel)",
        url=db)
    agents_missing = psql(
        "SELECT a.id, rel FROM agents a CROSS JOIN (VALUES ('account'), ('owner'), ('self')) "
        "v(rel) WHERE NOT EXISTS (SELECT 1 FROM relationships r WHERE r.resource_type = "
        "'agent' AND r.resource_id = a.id AND r.relation = v.rel)", url=db)
    stray = psql(
        "SELECT r.resource_type, r.resource_id, r.relation FROM relationships r WHERE "
        "(r.resource_type = 'agent_api_key' AND NOT EXISTS (SELECT 1 FROM api_keys k WHERE "
        "k.id = r.resource_id)) OR (r.resource_type = 'agent' AND NOT EXISTS (SELECT 1 FROM "
        "agents a WHERE a.id = r.resource_id))", url=db)
    return keys_missing, agents_missing, stray


def test_sigkill_during_write_load_loses_no_acknowledged_write(pair):
    a, b = pair
    admin_a = Admin(a, a.token("root-admin", admin=True))
    admin_b = Admin(b, b.token("root-admin", admin=True))
    t = Tenant(a, admin_a)
    bob_a = t.user("bob")
    bob_b = on(b, bob_a)
    r = bob_a.post("/agents", json={"name": "loaded"})
    assert r.status_code == 200
    ag = r.json()

    acked = {}  # key id -> (name, revision)
    agents_acked = {}
    lock = threading.Lock()
    stop = threading.Event()
    errors = []

    def writer(w):
        c = on(a, bob_a)
        i = 0
        while not stop.is_set():
            i += 1
            try:
                if i % 5 == 0:
                    r = c.post("/agents", json={"name": "w%d-a%d" % (w, i)}, timeout=10)
                else:
                    r = c.post("/agent_api_keys", json={"agent_id": ag["id"],
                                                         "name": "w%d-%d" % (w, i)}, timeout=10)
            except requests.RequestException:
                return  # A is gone (the response of an in-flight create is lost: not acked)
            if r.status_code == 200:
                with lock:
                    if i % 5 == 0:
                        agents_acked[r.json()["id"]] = rev_of(r)
                    else:
                        acked[r.json()["id"]] = (r.json()["name"], rev_of(r))
            else:
                errors.append((r.status_code, r.text))
                return

    ths = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for th in ths:
        th.start()
    deadline = time.monotonic() + 10
    while len(acked) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    a.kill()  # SIGKILL mid-load
    stop.set()
    for th in ths:
        th.join(30)
    assert not errors, errors[:3]
    assert len(acked) >= 40, "too few writes before the kill (%d)" % len(acked)

    # B is presented the database's revision now (>= every acknowledged one, and covering a
    # create that committed without its response reaching us): no polling
    top = max([v[1] for v in acked.values()] + list(agents_acked.values()))
    now = int(psql("SELECT value FROM revision", url=b.db)[0][0])
    assert now >= top, (now, top)
    hdr = {REV: str(now)}
    for kid in acked:
        r = bob_b.get("/agent_api_keys/" + kid, headers=hdr)
        assert r.status_code == 200, ("acknowledged key lost or unreadable on B", kid,
                                      r.status_code, r.text)
    for aid in agents_acked:
        assert bob_b.get("/agents/" + aid, headers=hdr).status_code == 200, aid
    # every key row (acknowledged or committed just before the kill) has its relationships on B
    rows = {x[0] for x in psql("SELECT id FROM api_keys WHERE agent_id = '%s'" % ag["id"],
                               url=b.db)}
    assert set(acked) <= rows
    r = admin_b.post("/v1/relationships/read", headers=hdr,
                     json={"relationshipFilter": {"resourceType": "agent_api_key"}})
    assert r.status_code == 200, r.text
    rels = [x["relationship"] for x in ndjson(r)]
    by_key = {}
    for x in rels:
        by_key.setdefault(x["resource"]["objectId"], set()).add(x["relation"])
    for kid in rows:
        assert by_key.get(kid) == {"parent_agent", "account", "owner"}, (kid, by_key.get(kid))
    assert set(by_key) == rows, "relationships of keys without a row: %r" % (set(by_key) - rows)
    # B's listing (rows filtered by B's graph) is exactly the database's rows
    r = bob_b.get("/agent_api_keys?limit=1000&agent_id=" + ag["id"], headers=hdr)
    assert r.status_code == 200
    assert {x["id"] for x in r.json()} == rows
    # and in the database itself: nothing half-written anywhere
    assert _orphans(b.db) == ([], [], [])

    # A restarted on the same database sees the same
    a.start()
    bob_a2 = on(a, bob_a)
    r = bob_a2.get("/agent_api_keys?limit=1000&agent_id=" + ag["id"])
    assert r.status_code == 200
    assert {x["id"] for x in r.json()} == rows
    print("\nSIGKILL under load: %d key creates and %d agent creates acknowledged, %d key rows "
          "committed" % (len(acked), len(agents_acked), len(rows)))


def test_delete_on_a_is_effective_on_b(pair):
    a, b = pair
    admin_a = Admin(a, a.token("root-admin", admin=True))
    t = Tenant(a, admin_a)
    bob_a = t.user("bob")
    bob_b = on(b, bob_a)
    ag = bob_a.create_agent("gone-soon")
    k = bob_a.create_key(ag["id"], "k", api_key_type="internal")
    kc = agent_key_client(b, k["api_key"])
    assert wait_status(kc, "/agents/" + ag["id"], 200) is not None
    r = bob_a.delete("/agent_api_keys/" + k["id"])
    assert r.status_code == 200
    hdr = {REV: str(rev_of(r))}
    assert bob_b.get("/agent_api_keys/" + k["id"], headers=hdr).status_code == 404
    assert kc.get("/agents/" + ag["id"], headers=hdr).status_code == 401
    r = bob_a.delete("/agents/" + ag["id"])
    assert r.status_code == 200
    hdr = {REV: str(rev_of(r))}
    assert bob_b.get("/agents/" + ag["id"], headers=hdr).status_code == 404
    admin_b = Admin(b, b.token("root-admin", admin=True))
    r = admin_b.post("/v1/relationships/read", headers=hdr, json={
        "relationshipFilter": {"resourceType": "agent", "optionalResourceId": ag["id"]}})
    assert r.status_code == 200 and r.text.strip() == "", r.text
    # and B can reuse the name at once (the row is gone from the one database)
    r = bob_b.post("/agents", json={"name": "gone-soon"}, headers=hdr)
    assert r.status_code == 200, r.text


def _rel_filter(account, user):
    return {"resourceType": "account", "optionalResourceId": account,
            "optionalRelation": "member",
            "optionalSubjectFilter": {"subjectType": "user", "optionalSubjectId": user}}


def _guarded_touch(admin, account, user, guard_account, guard_user, marker=None):
    """TOUCH account#member@user (and the marker, if any), provided nothing matches
    guard_account#member@guard_user."""
    ups = [{"operation": "OPERATION_TOUCH",
            "relationship": rel("account:" + account, "member", "user:" + user)}]
    if marker:
        ups.append({"operation": "OPERATION_TOUCH",
                    "relationship": rel("account:" + marker[0], "member", "user:" + marker[1])})
    return lambda: admin.post("/v1/relationships/write", json={
        "updates": ups, "optionalPreconditions": [{"operation": "OPERATION_MUST_NOT_MATCH",
                                                   "filter": _rel_filter(guard_account,
                                                                         guard_user)}]})


def _one_won(ra, rb, what):
    codes = sorted([ra.status_code, rb.status_code])
    assert codes != [200, 200], "%s: both preconditions passed (lost update across " \
        "instances): %s / %s" % (what, ra.text, rb.text)
    assert codes == [200, 400], (what, ra.status_code, ra.text, rb.status_code, rb.text)
    loser = ra if ra.status_code == 400 else rb
    assert loser.json()["code"] == 9, loser.text  # FAILED_PRECONDITION


def test_preconditions_hold_across_instances(pair):
    """Each round, A and B write at the same instant, each a different relationship, each
    guarded by MUST_NOT_MATCH on the other's (odd rounds: both guarded by the absence of
    one marker that both write). Serially exactly one can succeed; so must it be when the
    two instances race: one 200, one 400 FAILED_PRECONDITION, never both in the database."""
    a, b = pair
    admin_a = Admin(a, a.token("root-admin", admin=True))
    admin_b = Admin(b, b.token("root-admin", admin=True))
    sfx = uuid.uuid4().hex[:8]
    rounds = 60
    for i in range(rounds):
        acct = "pre-%s-%d" % (sfx, i)
        if i % 2 == 0:
            fa = _guarded_touch(admin_a, acct, "from-a", acct, "from-b")
            fb = _guarded_touch(admin_b, acct, "from-b", acct, "from-a")
        else:
            mark = ("mark-%s-%d" % (sfx, i), "marker")
            fa = _guarded_touch(admin_a, acct, "from-a", mark[0], mark[1], marker=mark)
            fb = _guarded_touch(admin_b, acct, "from-b", mark[0], mark[1], marker=mark)
        ra, rb = _race([fa, fb])
        _one_won(ra, rb, "round %d" % i)
        n = psql("SELECT count(*) FROM relationships WHERE resource_type = 'account' AND "
                 "resource_id = '%s'" % acct, url=a.db)
        assert n == [["1"]], ("round %d: the database holds both guarded writes" % i, n)
    # and both graphs agree with the database (the loser changed nothing anywhere)
    top = int(psql("SELECT value FROM revision", url=a.db)[0][0])
    for adm in (admin_a, admin_b):
        r = adm.post("/v1/relationships/read", headers={REV: str(top)}, json={
            "relationshipFilter": {"resourceType": "account"}})
        assert r.status_code == 200, r.text
        got = {x["relationship"]["resource"]["objectId"] for x in ndjson(r)}
        assert all(("pre-%s-%d" % (sfx, i)) in got for i in range(rounds))


def test_delete_limit_holds_across_instances(pair):
    """A deletes account#member with optionalLimit = the 3 members it sees while B adds a
    4th at the same instant. Either B comes first (A: 400, all 4 stay) or A does (A deletes
    exactly 3, B's member stays): never 4 deleted under a limit of 3."""
    a, b = pair
    admin_a = Admin(a, a.token("root-admin", admin=True))
    admin_b = Admin(b, b.token("root-admin", admin=True))
    sfx = uuid.uuid4().hex[:8]
    for i in range(40):
        acct = "lim-%s-%d" % (sfx, i)
        admin_a.touch(*[("account:" + acct, "member", "user:m%d" % k) for k in range(3)])
        flt = {"resourceType": "account", "optionalResourceId": acct}
        ra, rb = _race([
            lambda: admin_a.post("/v1/relationships/delete",
                                 json={"relationshipFilter": flt, "optionalLimit": 3}),
            lambda: admin_b.post("/v1/relationships/write", json={"updates": [{
                "operation": "OPERATION_TOUCH",
                "relationship": rel("account:" + acct, "member", "user:late")}]})])
        assert rb.status_code == 200, rb.text
        left = int(psql("SELECT count(*) FROM relationships WHERE resource_type = 'account' "
                        "AND resource_id = '%s'" % acct, url=a.db)[0][0])
        if ra.status_code == 200:
            assert ra.json()["relationshipsDeletedCount"] == "3", (i, ra.text)
            assert left == 1, ("round %d: deleted more than optionalLimit" % i, left)
        else:
            assert ra.status_code == 400 and ra.json()["code"] == 3, (i, ra.text)
            assert left == 4, (i, left)


# ---------------------------------------------------------------------------------------------
# Changelog retention: an instance that fell behind the pruned horizon resyncs by itself

RETAIN_S = 2  # KEYWARD_CHANGELOG_RETAIN_S in the retention test (default 86400)
LEASE_S = 5   # KW__API_LEASE_MS: how long a follower's proof of currency stays valid
DOC_DEF = """

definition document {
    relation viewer: user
    relation banned: user
    permission view = viewer - banned
}
"""


@pytest.fixture
def pruning_pair(tmp_path):
    """A and B over one fresh database, both pruning every second what is older than
    RETAIN_S seconds."""
    env = {"KEYWARD_CHANGELOG_RETAIN_S": str(RETAIN_S),
           "KEYWARD_CHANGELOG_PRUNE_INTERVAL_S": "1",
           "KEYWARD_FRESHNESS_TIMEOUT_MS": str(FRESHNESS_MS)}
    a = Server(tmp_path / "a", env_extra=env)
    a.start()
    b = Server(tmp_path / "b", db=a.db, secret=a.secret, env_extra=env)
    try:
        b.start()
    except BaseException:
        a.kill()
        raise
    yield a, b
    for s in (a, b):
        if s.proc is not None and s.proc.poll() is None:
            s.proc.send_signal(signal.SIGCONT)  # never leave a stopped process behind
        s.kill()


def metric(server, name):
    r = requests.get(server.url + "/metrics", timeout=10)
    assert r.status_code == 200
    for line in r.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("metric %s missing" % name)


def _v1_check(admin, resource, permission, subject, headers=None):
    """(status, permissionship or None) of a v1 check; never asserts."""
    rt, rid = resource.split(":", 1)
    st, sid = subject.split(":", 1)
    r = admin.post("/v1/permissions/check", headers=headers, json={
        "resource": {"objectType": rt, "objectId": rid}, "permission": permission,
        "subject": {"object": {"objectType": st, "objectId": sid}}})
    return r.status_code, (r.json().get("permissionship") if r.status_code == 200 else None)


def test_behind_pruned_horizon_resyncs_by_itself_never_stale(pruning_pair):
    """B is paused (SIGSTOP) while A revokes access, changes keys and the schema, and prunes
    the changelog past B's revision. Resumed, B must notice by itself that the changes it
    missed are gone, reload everything, and then answer exactly as A does; while it does,
    every answer is 503 or the correct one: never the revoked access (a 200 from B's old
    graph would be a breach)."""
    a, b = pruning_pair
    admin_a = Admin(a, a.token("root-admin", admin=True))
    admin_b = Admin(b, b.token("root-admin", admin=True))
    t = Tenant(a, admin_a)
    bob_a, dave_a = t.user("bob"), t.user("dave")
    bob_b, dave_b = on(b, bob_a), on(b, dave_a)
    dave = t.uid("dave")

    # Before the pause: dave may read bob's agent (viewer), and B knows it.
    ag = bob_a.create_agent("shared")
    path = "/agents/" + ag["id"]
    keep = bob_a.create_key(ag["id"], "keep", api_key_type="internal")
    gone = bob_a.create_key(ag["id"], "gone", api_key_type="internal")
    r = admin_a.write([{"operation": "OPERATION_TOUCH",
                        "relationship": rel("agent:" + ag["id"], "viewer", "user:" + dave)}])
    hdr = {REV: str(rev_of(r))}
    r = dave_b.get(path, headers=hdr)
    assert r.status_code == 200, (r.status_code, r.text)
    gone_b = agent_key_client(b, gone["api_key"])
    assert gone_b.get(path, headers=hdr).status_code == 200
    b_rev = rev_of(r)

    b.proc.send_signal(signal.SIGSTOP)
    paused = time.monotonic()
    try:
        # On A, while B sleeps: revoke dave, delete a key, make and drop others, and a new
        # schema with an exclusion whose second half B has never seen.
        admin_a.remove(("agent:" + ag["id"], "viewer", "user:" + dave))
        assert dave_a.get(path).status_code == 404
        assert bob_a.delete("/agent_api_keys/" + gone["id"]).status_code == 200
        for i in range(3):
            bob_a.create_key(ag["id"], "new-%d" % i)
        tmp = bob_a.create_agent("short-lived")
        assert bob_a.delete("/agents/" + tmp["id"]).status_code == 200
        text = admin_a.post("/v1/schema/read", json={}).json()["schemaText"]
        r = admin_a.post("/v1/schema/write", json={"schema": text + DOC_DEF})
        assert r.status_code == 200, r.text
        admin_a.touch(("document:plan", "viewer", "user:" + dave),
                      ("document:plan", "banned", "user:" + dave),
                      ("document:plan", "viewer", "user:" + t.uid("erin")))
        assert _v1_check(admin_a, "document:plan", "view", "user:" + dave) == (
            200, "PERMISSIONSHIP_NO_PERMISSION")
        last = rev_of(admin_a.remove(("document:plan", "viewer", "user:" + t.uid("erin"))))

        # A prunes (every second, what is older than RETAIN_S) past B's revision: the
        # changes B has not applied are gone from the database.
        deadline = time.monotonic() + 30
        horizon = 0
        while time.monotonic() < deadline:
            horizon = int(psql("SELECT pruned_through FROM changelog_horizon", url=a.db)[0][0])
            if horizon >= last:
                break
            time.sleep(0.2)
        assert horizon >= last > b_rev, ("A did not prune past B's revision", horizon, last, b_rev)
        assert psql("SELECT count(*) FROM changelog WHERE revision <= %d" % last,
                    url=a.db) == [["0"]]
        assert metric(a, "keyward_changelog_pruned_rows_total") > 0
        # Paused longer than the freshness lease: B's old graph must not count as fresh.
        time.sleep(max(0.0, LEASE_S + 1 - (time.monotonic() - paused)))

        # Poll B from before it resumes until it answers correctly: only 503 or the truth.
        seen = []
        stop = threading.Event()

        def poll():
            dave_p, gone_p = on(b, dave_a), agent_key_client(b, gone["api_key"])
            adm_p = Admin(b, b.token("root-admin", admin=True))
            while not stop.is_set():
                try:
                    seen.append(("dave", dave_p.get(path, timeout=20).status_code))
                    seen.append(("gone-key", gone_p.get(path, timeout=20).status_code))
                    seen.append(("v1", _v1_check(adm_p, "agent:" + ag["id"], "read",
                                                 "user:" + dave)))
                except requests.RequestException as e:  # noqa: PERF203
                    seen.append(("error", repr(e)))
                    return

        th = threading.Thread(target=poll)
        th.start()
        time.sleep(0.2)  # requests queued on the paused process
    finally:
        b.proc.send_signal(signal.SIGCONT)
    try:
        resynced = wait_status(dave_b, path, 404, limit=20)
        assert resynced is not None, "B did not resync by itself within 20 s:\n" + \
            b.stderr_text()[-3000:]
        time.sleep(0.3)  # keep polling B a little after it is back
    finally:
        stop.set()
        th.join(30)
    print("\nresync after the pause: B answered correctly %.0f ms after SIGCONT; %d polled "
          "answers" % (resynced * 1e3, len(seen)))
    bad = [s for s in seen if s not in (("dave", 503), ("dave", 404), ("gone-key", 503),
                                        ("gone-key", 401), ("v1", (503, None)),
                                        ("v1", (200, "PERMISSIONSHIP_NO_PERMISSION")))]
    assert not bad, "B answered from a stale graph after SIGCONT: %r" % bad[:10]
    assert ("dave", 404) in seen, "the poller never saw B's correct answer"

    # B now answers exactly as A does (A's current revision presented to B).
    top = int(psql("SELECT value FROM revision", url=a.db)[0][0])
    hdr = {REV: str(top)}
    for ca, cb in ((bob_a, bob_b), (dave_a, dave_b)):
        for p in (path, "/agents?limit=1000", "/agent_api_keys?limit=1000&agent_id=" + ag["id"],
                  "/agents/" + tmp["id"], "/agent_api_keys/" + gone["id"],
                  "/agent_api_keys/" + keep["id"]):
            ra, rb = ca.get(p, headers=hdr), cb.get(p, headers=hdr)
            assert (rb.status_code, rb.text) == (ra.status_code, ra.text), (p, ra.text, rb.text)
    assert gone_b.get(path).status_code == 401
    assert agent_key_client(b, keep["api_key"]).get(path, headers=hdr).status_code == 200
    for q in (("document:plan", "view", "user:" + dave),
              ("document:plan", "view", "user:" + t.uid("erin")),
              ("agent:" + ag["id"], "read", "user:" + dave),
              ("agent:" + ag["id"], "delete", "user:" + t.uid("bob"))):
        assert _v1_check(admin_b, *q, headers=hdr) == _v1_check(admin_a, *q, headers=hdr), q
    flt = {"relationshipFilter": {"resourceType": "agent_api_key"}}
    ra = admin_a.post("/v1/relationships/read", headers=hdr, json=flt)
    rb = admin_b.post("/v1/relationships/read", headers=hdr, json=flt)
    strip = lambda r: sorted(json.dumps(x["relationship"], sort_keys=True) for x in ndjson(r))
    assert strip(ra) == strip(rb)
    assert admin_b.post("/v1/schema/read", json={}).json()["schemaText"] == text + DOC_DEF
    assert metric(b, "keyward_resyncs_total") == 1
    assert metric(b, "keyward_fresh") == 1
    log = b.stderr_text()
    assert log.count("reloading every relationship") == 1, log[-3000:]

    # And B follows A again, change by change.
    ag2 = bob_a.create_agent("after")
    assert wait_status(bob_b, "/agents/" + ag2["id"], 200) is not None


def test_pool_defaults_to_the_thread_count(tmp_path):
    """Without pool=N in the URL or KEYWARD_PG_POOL, an instance gets one connection per HTTP
    worker thread (requests in flight), at least 2; an explicit setting always wins."""
    import re
    base = Server(tmp_path / "base")
    base.start()
    base.kill()
    sep = "&" if "?" in base.db else "?"
    cases = [([], {}, base.db, 16),
             (["--threads", "5"], {}, base.db, 5),
             (["--threads", "1"], {}, base.db, 2),
             (["--threads", "9"], {"KEYWARD_PG_POOL": "3"}, base.db, 3),
             (["--threads", "9"], {}, base.db + sep + "pool=7", 7)]
    for i, (args, env, db, want) in enumerate(cases):
        s = Server(tmp_path / ("s%d" % i), db=db, secret=base.secret, extra_args=args,
                   env_extra=env)
        s.start()
        try:
            r = Client(s).get("/healthz")
            assert r.status_code == 200
        finally:
            s.kill()
        log = open(s.stderr_path, encoding="utf-8", errors="replace").read()
        got = re.findall(r"pool of (\d+) connections", log)
        assert got and int(got[0]) == want, (args, env, db, got)
