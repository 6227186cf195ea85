"""Group commit (docs/ARCHITECTURE.md, "Write path"): concurrent writes share transactions.

200 key creates are fired at once on one agent (on SQLite, and on PostgreSQL in PostgreSQL
mode), 50 names of them twice. What must hold whatever the batching:
- every 200 has its row and its three relationships: GET by id answers 200 with the same key,
  the agent's listing shows it, /v1 reads its relationships;
- every repeated name gives exactly one 200 and one 409 (also when both land in one batch),
  every other name a 200;
- nothing is half-written: the database holds exactly the 200s' rows, each with its three
  relationships, and no relationship of a key that has no row;
- revisions: every 200 carries X-Keyward-Revision; the writes that share a revision are one
  batch, so /metrics counts exactly one batch per distinct revision and one job per 200, and
  the instance's revision afterwards is the highest one handed out;
- the batching happened (some batch carried more than one write).
Also a /v1 write burst touching the same relationships at once (a repeat inside a batch is
deferred to the next transaction, never applied twice in one revision) and /v1 writes with
preconditions mixed in (run alone).
"""
import collections
import os
import re
import sqlite3
import threading

import pytest

from conftest import Admin, Client, Server, Tenant, pg_mode, psql, rel

REV = "X-Keyward-Revision"
N_UNIQUE = 150
N_REPEATED = 50
TYPES = ("internal", "external", "github", "slack")


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "g", extra_args=["--threads", "16"])
    s.start()
    yield s
    s.kill()


def metrics(server):
    r = Client(server).get("/metrics")
    assert r.status_code == 200
    out = {}
    for line in r.text.splitlines():
        m = re.match(r"^(keyward_write_\w+|keyward_revision) (\d+)$", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    for k in ("keyward_write_batches_total", "keyward_write_batch_jobs_total",
              "keyward_write_batch_max_jobs", "keyward_write_deferred_total", "keyward_revision"):
        assert k in out, (k, r.text)
    return out


def fire(n, fn):
    """Runs fn(i) for i in range(n) on n threads released together; returns the results."""
    out = [None] * n
    go = threading.Event()

    def run(i):
        go.wait()
        try:
            out[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - reported by the caller's asserts
            out[i] = e

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    go.set()
    for t in ts:
        t.join(60)
    return out


def db_rows(server, agent_id):
    """(key ids with a row, {key id: set of relations}) for the agent, from the database."""
    if server.db_path:
        c = sqlite3.connect(server.db_path, timeout=10)
        try:
            ids = [r[0] for r in c.execute("SELECT id FROM api_keys WHERE agent_id = ?",
                                           (agent_id,))]
            rels = c.execute("SELECT resource_id, relation FROM relationships "
                             "WHERE resource_type = 'agent_api_key'").fetchall()
        finally:
            c.close()
    else:
        ids = [r[0] for r in psql("SELECT id FROM api_keys WHERE agent_id = '%s'" % agent_id,
                                  url=server.db)]
        rels = [tuple(r) for r in psql("SELECT resource_id, relation FROM relationships "
                                       "WHERE resource_type = 'agent_api_key'", url=server.db)]
    by_key = collections.defaultdict(set)
    for rid, relation in rels:
        by_key[rid].add(relation)
    return ids, by_key


def test_concurrent_creates_share_commits_and_stay_whole(server):
    admin = Admin(server, server.token("root-admin", admin=True))
    t = Tenant(server, admin)
    bob = t.user("bob")
    ag = bob.create_agent("burst")
    m0 = metrics(server)

    names = ["k-%03d" % i for i in range(N_UNIQUE)] + ["k-%03d" % i for i in range(N_REPEATED)]
    assert len(names) == 200

    def create(i):
        c = Client(server, sub=bob.sub)
        c.headers = dict(bob.headers)
        name = names[i]
        typ = TYPES[int(name[2:]) % len(TYPES)]  # a repeated name repeats its type
        return c.post("/agent_api_keys", json={"agent_id": ag["id"], "name": name,
                                              "api_key_type": typ})

    res = fire(len(names), create)
    for r in res:
        assert not isinstance(r, Exception), r
        assert r.status_code in (200, 409), (r.status_code, r.text)

    by_name = collections.defaultdict(list)
    for name, r in zip(names, res):
        by_name[name].append(r)
    ok = []
    for name, rs in by_name.items():
        codes = sorted(r.status_code for r in rs)
        if int(name[2:]) < N_REPEATED:
            assert codes == [200, 409], (name, [(r.status_code, r.text) for r in rs])
            lost = next(r for r in rs if r.status_code == 409)
            assert lost.json() == {
                "detail": "A key with this name and type already exists for the agent."}
        else:
            assert codes == [200], (name, [(r.status_code, r.text) for r in rs])
        ok.append(next(r for r in rs if r.status_code == 200))
    assert len(ok) == N_UNIQUE

    keys = {}
    revs = []
    for r in ok:
        k = r.json()
        keys[k["id"]] = k
        assert r.headers.get(REV, "").isdigit(), dict(r.headers)
        revs.append(int(r.headers[REV]))
    assert len(keys) == N_UNIQUE

    # Read back: by id, in the listing, and the relationships through /v1.
    top = max(revs)
    for kid, k in keys.items():
        g = bob.get("/agent_api_keys/" + kid, headers={REV: str(top)})
        assert g.status_code == 200, (g.status_code, g.text)
        got = g.json()
        assert (got["name"], got["api_key_type"], got["agent_id"]) == (
            k["name"], k["api_key_type"], ag["id"])
        assert "api_key" not in got
    lst = bob.get("/agent_api_keys?agent_id=%s&limit=1000" % ag["id"])
    assert lst.status_code == 200
    assert {k["id"] for k in lst.json()} == set(keys)
    for kid in list(keys)[:20]:
        got = {(x["relation"], x["subject"]["object"]["objectType"])
               for x in admin.read_rels("agent_api_key", kid)}
        assert got == {("parent_agent", "agent"), ("account", "account"), ("owner", "user")}, got

    # Nothing half-written: exactly the 200s' rows, each with its three relationships.
    ids, rels = db_rows(server, ag["id"])
    assert sorted(ids) == sorted(keys)
    for kid in ids:
        assert rels[kid] == {"parent_agent", "account", "owner"}, (kid, rels[kid])
    assert set(rels) == set(keys)  # a fresh database: no key relationship without its row

    # Revisions: one batch per distinct revision, one job per 200; the instance is at the top.
    m1 = metrics(server)
    batches = m1["keyward_write_batches_total"] - m0["keyward_write_batches_total"]
    jobs = m1["keyward_write_batch_jobs_total"] - m0["keyward_write_batch_jobs_total"]
    assert jobs == N_UNIQUE, (jobs, m0, m1)
    assert batches == len(set(revs)), (batches, len(set(revs)))
    assert m1["keyward_revision"] == top
    per_rev = collections.Counter(revs)
    print("group commit: %d creates -> %d commits, largest %d, metrics max %d"
          % (N_UNIQUE, batches, max(per_rev.values()), m1["keyward_write_batch_max_jobs"]))
    assert max(per_rev.values()) > 1, "no two writes shared a commit: %r" % per_rev


def test_v1_burst_on_the_same_relationships(server):
    """60 /v1 writes at once over 10 relationships (TOUCH, then DELETE of half of them, both
    repeated), plus writes guarded by preconditions: all succeed, no revision is refused by
    the engine, the graph ends as the last operation on each relationship says."""
    admin = Admin(server, server.token("root-admin", admin=True))
    sfx = os.urandom(4).hex()
    triples = [("account:burst-%s" % sfx, "member", "user:u%d-%s" % (i, sfx)) for i in range(10)]

    def touch(i):
        c = Admin(server, admin.headers["Authorization"][len("Bearer "):])
        return c.post("/v1/relationships/write", json={"updates": [
            {"operation": "OPERATION_TOUCH", "relationship": rel(*triples[i % 10])},
            {"operation": "OPERATION_TOUCH", "relationship": rel(*triples[(i + 1) % 10])}]})

    res = fire(60, touch)
    for r in res:
        assert not isinstance(r, Exception), r
        assert r.status_code == 200, (r.status_code, r.text)
    assert len(admin.read_rels("account", "burst-%s" % sfx)) == 10

    def mixed(i):
        c = Admin(server, admin.headers["Authorization"][len("Bearer "):])
        trip = triples[i % 5]
        if i % 3 == 0:  # guarded: runs alone; always true (the account has members)
            return c.post("/v1/relationships/write", json={
                "updates": [{"operation": "OPERATION_DELETE", "relationship": rel(*trip)}],
                "optionalPreconditions": [{"operation": "OPERATION_MUST_MATCH", "filter": {
                    "resourceType": "account", "optionalResourceId": "burst-%s" % sfx}}]})
        return c.post("/v1/relationships/write", json={"updates": [
            {"operation": "OPERATION_DELETE", "relationship": rel(*trip)}]})

    res = fire(30, mixed)
    for r in res:
        assert not isinstance(r, Exception), r
        assert r.status_code == 200, (r.status_code, r.text)
    left = {x["subject"]["object"]["objectId"] for x in admin.read_rels("account",
                                                                         "burst-%s" % sfx)}
    assert left == {"u%d-%s" % (i, sfx) for i in range(5, 10)}, left
    m = metrics(server)
    assert m["keyward_revision"] >= 1


def test_key_create_racing_its_agents_delete_is_404_never_500(server):
    """Creates on an agent fired together with the agent's delete: a create that passed its
    permission check before the delete committed meets the row's foreign key (or a batch in
    which the delete came first). Its answer is the agent 404, byte for byte as for an agent
    that never existed, never a 500; afterwards the database holds no key of the agent and
    no relationship of such a key."""
    admin = Admin(server, server.token("root-admin", admin=True))
    t = Tenant(server, admin)
    bob = t.user("bob")
    never = bob.post("/agent_api_keys", json={"agent_id": "00000000-0000-7000-8000-000000000000",
                                              "name": "x"})
    assert never.status_code == 404
    seen = collections.Counter()
    for rnd in range(15):
        ag = bob.create_agent("doomed-%d" % rnd)

        def act(i, ag=ag):
            c = Client(server, sub=bob.sub)
            c.headers = dict(bob.headers)
            if i == 3:
                return c.delete("/agents/" + ag["id"])
            return c.post("/agent_api_keys", json={"agent_id": ag["id"], "name": "k%d" % i})

        res = fire(12, act)
        for i, r in enumerate(res):
            assert not isinstance(r, Exception), r
            if i == 3:
                assert r.status_code == 200, (r.status_code, r.text)
                continue
            assert r.status_code in (200, 404), (rnd, i, r.status_code, r.text)
            if r.status_code == 404:
                assert r.content == never.content, (r.content, never.content)
            seen[r.status_code] += 1
        ids, rels = db_rows(server, ag["id"])
        assert ids == [], (rnd, ids)
        created = [r.json()["id"] for r in res if r.status_code == 200 and "api_key" in r.json()]
        assert not any(k in rels for k in created), (rnd, created)
    print("creates racing the delete: %r" % dict(seen))
