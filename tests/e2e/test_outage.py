"""PostgreSQL outages (PostgreSQL mode only).

The database goes away under running instances (`scripts/pg-test-cluster.sh down`: an
immediate stop, like a crash) and comes back (`up`, same port). While it is down the data
routes answer 503 {"detail": "Database unavailable"} promptly and change nothing, /readyz is
503 and /healthz 200; after `up` the instances recover by themselves (no restart) within a few
seconds, answer correctly, and a write on one is again visible on the other.

The test runs on a PRIVATE throwaway cluster (its own state file, its own port), so stopping
it never disturbs the server the rest of the suite uses; the cluster is removed afterwards
whatever happened.
"""
import os
import subprocess
import time

import pytest

from conftest import (REPO, Admin, Client, Server, Tenant, agent_key_client, pg_db_url,
                      pg_mode, psql, snapshot)

pytestmark = pytest.mark.skipif(not pg_mode(),
                                reason="outages are tested on PostgreSQL (KEYWARD_TEST_PG_URL)")

CLUSTER = os.path.join(REPO, "scripts", "pg-test-cluster.sh")
DOWN = {"detail": "Database unavailable"}
REV = "X-Keyward-Revision"


class Cluster:
    def __init__(self, state):
        self.env = dict(os.environ, KW_PG_STATE=str(state))

    def run(self, cmd):
        p = subprocess.run(["bash", CLUSTER, cmd], env=self.env, capture_output=True, timeout=90)
        assert p.returncode == 0, (cmd, p.returncode, p.stderr.decode(errors="replace"))
        return p.stdout.decode().strip()


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path / "pg.state")
    c.url = c.run("start")
    try:
        yield c
    finally:
        # brought back/removed even when the test failed midway (stop works on a down cluster)
        c.run("stop")


def wait_for(fn, limit):
    """Polls fn() until truthy; returns the seconds it took, or None after `limit`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        try:
            if fn():
                return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - a refused connection is just "not yet"
            pass
        time.sleep(0.05)
    return None


def test_database_outage_503_changes_nothing_and_recovers(cluster, tmp_path):
    name = "kw_outage_%d" % os.getpid()
    psql("CREATE DATABASE %s" % name, url=cluster.url)
    db = pg_db_url(name, base=cluster.url)
    a = Server(tmp_path / "a", db=db)
    b = Server(tmp_path / "b", db=db, secret=a.secret)
    try:
        a.start()
        b.start()
        admin = Admin(a, a.token("root-admin", admin=True))
        t = Tenant(a, admin)
        bob = t.user("bob")
        ag = bob.create_agent("before")
        k = bob.create_key(ag["id"], "k", api_key_type="internal")
        kc = agent_key_client(a, k["api_key"])
        before = snapshot(bob)
        rev_before = int(bob.get("/agents").headers[REV])
        bob_b = Client(b, bob.headers["Authorization"].split()[1], sub=bob.sub)
        assert wait_for(lambda: bob_b.get("/agents/" + ag["id"]).status_code == 200, 3) \
            is not None, "B never saw A's writes"

        cluster.run("down")
        # every data route: 503, promptly, the documented body
        calls = [
            ("GET", "/agents", None, bob),
            ("GET", "/agents/" + ag["id"], None, bob),
            ("GET", "/agents/name/before", None, bob),
            ("GET", "/agent_api_keys?agent_id=" + ag["id"], None, bob),
            ("GET", "/agent_api_keys/" + k["id"], None, bob),
            ("POST", "/agents", {"name": "during"}, bob),
            ("POST", "/agent_api_keys", {"agent_id": ag["id"], "name": "during"}, bob),
            ("DELETE", "/agent_api_keys/" + k["id"], None, bob),
            ("DELETE", "/agents/" + ag["id"], None, bob),
            ("GET", "/agents", None, kc),
            ("POST", "/v1/relationships/write", {"updates": [{
                "operation": "OPERATION_TOUCH", "relationship": {
                    "resource": {"objectType": "account", "objectId": t.account},
                    "relation": "member",
                    "subject": {"object": {"objectType": "user", "objectId": "mallory"}}}}]},
             admin),
            ("POST", "/v1/relationships/read", {"relationshipFilter": {"resourceType": "agent"}},
             admin),
            ("POST", "/v1/permissions/check", {
                "resource": {"objectType": "agent", "objectId": ag["id"]}, "permission": "read",
                "subject": {"object": {"objectType": "user", "objectId": t.uid("bob")}}}, admin),
        ]
        # routes answered from the in-memory graph alone: 503 as soon as the instance has
        # noticed that it lost the database (its follower's connection broke: milliseconds)
        graph_only = ("/v1/relationships/read", "/v1/permissions/check")
        for method, path, body, who in calls:
            if path in graph_only:
                assert wait_for(lambda: who.req(method, path, json=body).status_code == 503, 3) \
                    is not None, ("a graph route still answers without the database", path)
            t0 = time.monotonic()
            r = who.req(method, path, json=body, timeout=30)
            took = time.monotonic() - t0
            assert r.status_code == 503, (method, path, r.status_code, r.text)
            assert r.json().get("detail") == DOWN["detail"], (method, path, r.text)
            assert took < 10, (method, path, "took %.1f s" % took)
        # instance B (its follower's connection died too) refuses as well
        r = bob_b.get("/agents/" + ag["id"])
        assert r.status_code == 503, (r.status_code, r.text)
        for s in (a, b):
            assert Client(s).get("/healthz").status_code == 200
            assert Client(s).get("/readyz").status_code == 503
            assert s.proc.poll() is None, "an instance died with the database"

        cluster.run("up")
        t_ready = wait_for(lambda: Client(a).get("/readyz").status_code == 200, 15)
        assert t_ready is not None, "A not ready 15 s after the database came back"
        t_data = wait_for(lambda: bob.get("/agents").status_code == 200, 15)
        t_data_b = wait_for(lambda: bob_b.get("/agents/" + ag["id"]).status_code == 200, 15)
        assert t_data is not None and t_data_b is not None, "no recovery without a restart"
        print("\nrecovery after `up`: readyz %.3f s, data routes A %.3f s, B %.3f s"
              % (t_ready, t_data, t_data_b))
        assert t_data < 10 and t_data_b < 10
        # nothing changed while it was down: rows, graph, revision
        assert snapshot(bob) == before
        r = bob.get("/agents")
        assert int(r.headers[REV]) == rev_before, "a refused request committed a revision"
        assert psql("SELECT count(*) FROM agents", url=db) == [["1"]]
        assert psql("SELECT count(*) FROM api_keys", url=db) == [["1"]]
        assert psql("SELECT count(*) FROM relationships WHERE subject_id = 'mallory'",
                    url=db) == [["0"]]
        assert not admin.check("account:" + t.account, "gate", "user:mallory")
        assert kc.get("/agents/" + ag["id"]).status_code == 200  # the key still opens
        # writes work again, and B follows them (its LISTEN/catch-up came back too)
        r = bob.post("/agents", json={"name": "after"})
        assert r.status_code == 200, r.text
        after = r.json()
        r = bob_b.get("/agents/" + after["id"], headers={REV: r.headers[REV]})
        assert r.status_code == 200, (r.status_code, r.text)
        assert wait_for(lambda: bob_b.get("/agents/name/after").status_code == 200, 1.5) \
            is not None, "B does not follow A's writes after the outage"
    finally:
        a.kill()
        b.kill()
