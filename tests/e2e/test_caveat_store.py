"""Caveats and expiry survive in the store (issue 11, items 3 and 4): a caveated and an
expiring relationship written through /v1 come back from /v1/relationships/read with the
same optionalCaveat and optionalExpiresAt after a restart (SQLite, or a fresh PostgreSQL
database in PostgreSQL mode), the expiry sweep removes an expired relationship from the
database by itself, and with two PostgreSQL instances over one database the other
instance reads them too, before and after its own restart.

The schema is the built-in agentex.zed plus `use expiration`, a caveat and a `document`
definition.
"""
import datetime
import json
import os
import sqlite3
import time

import pytest

from conftest import REPO, Admin, Server, ndjson, pg_mode, psql

REV = "X-Keyward-Revision"

EXTRA = """
caveat ip_allowed(cidr string, n int) {
    n > 1 && cidr != ""
}

definition document {
    relation viewer: user | user with ip_allowed | user with expiration
    permission view = viewer
}
"""

CONTEXT = {"cidr": "10.0.0.0/8", "n": 5}


def schema_file(tmp_path):
    with open(os.path.join(REPO, "src", "api", "agentex.zed")) as f:
        text = "use expiration\n\n" + f.read() + EXTRA
    path = tmp_path / "schema.zed"
    path.write_text(text)
    return str(path)


def start_or_skip(server):
    """Starts `server` (the engine, the stores and /v1 all take caveats and expiry now: a
    refusal at start is a failure, not a skip)."""
    server.start()
    return server


def rfc3339(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def parse_ts(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def doc_rel(doc, user, caveat=None, expires=None):
    r = {"resource": {"objectType": "document", "objectId": doc}, "relation": "viewer",
         "subject": {"object": {"objectType": "user", "objectId": user}}}
    if caveat:
        r["optionalCaveat"] = {"caveatName": caveat, "context": CONTEXT}
    if expires is not None:
        r["optionalExpiresAt"] = rfc3339(expires)
    return r


def docs(admin, headers=None):
    """document relationships by resource id, as /v1/relationships/read returns them."""
    r = admin.post("/v1/relationships/read", headers=headers or {},
                   json={"relationshipFilter": {"resourceType": "document"}})
    assert r.status_code == 200, (r.status_code, r.text)
    return {x["relationship"]["resource"]["objectId"]: x["relationship"] for x in ndjson(r)}


def expect_written(got, later):
    assert set(got) >= {"d1", "d2", "d3"}, got
    cav = got["d1"].get("optionalCaveat")
    assert cav and cav["caveatName"] == "ip_allowed", got["d1"]
    assert cav.get("context") == CONTEXT, cav
    assert not got["d1"].get("optionalExpiresAt"), got["d1"]
    assert parse_ts(got["d2"]["optionalExpiresAt"]) == later, got["d2"]
    assert not got["d2"].get("optionalCaveat"), got["d2"]
    assert not got["d3"].get("optionalCaveat") and not got["d3"].get("optionalExpiresAt")


def stored_rows(server, where):
    """How many relationships rows match `where` in the server's database."""
    sql = "SELECT count(*) FROM relationships WHERE " + where
    if server.db_path:
        con = sqlite3.connect(server.db_path)
        try:
            return con.execute(sql).fetchone()[0]
        finally:
            con.close()
    return int(psql(sql, url=server.db)[0][0])


def test_caveat_and_expiry_survive_restart_and_expired_rows_are_swept(tmp_path):
    s = Server(tmp_path / "s", extra_args=["--schema", schema_file(tmp_path)],
               env_extra={"KEYWARD_EXPIRY_SWEEP_INTERVAL_S": "1"})
    start_or_skip(s)
    try:
        admin = Admin(s, s.token("root-admin", admin=True))
        later = int(time.time()) + 3600
        soon = int(time.time()) + 3
        admin.write([{"operation": "OPERATION_TOUCH", "relationship": r} for r in (
            doc_rel("d1", "alice", caveat="ip_allowed"),
            doc_rel("d2", "bob", expires=later),
            doc_rel("d3", "carol"),
            doc_rel("d4", "dave", expires=soon))])
        expect_written(docs(admin), later)
        assert stored_rows(s, "caveat_name = 'ip_allowed'") == 1
        # A restart: everything comes back from the database.
        assert s.stop() == 0
        s.start()
        admin = Admin(s, s.token("root-admin", admin=True))
        expect_written(docs(admin), later)
        # d4 expires: invisible from then on, and the sweep deletes its row by itself.
        deadline = time.time() + 15
        while time.time() < deadline and stored_rows(s, "resource_id = 'd4'") != 0:
            time.sleep(0.2)
        assert stored_rows(s, "resource_id = 'd4'") == 0, "the expired row was not swept"
        assert "d4" not in docs(admin)
        assert stored_rows(s, "resource_id = 'd2'") == 1  # not due: kept
        m = admin.get("/metrics")
        assert m.status_code == 200
        swept = [line for line in m.text.splitlines()
                 if line.startswith("keyward_expired_relationships_swept_total ")]
        assert swept and int(swept[0].split()[1]) >= 1, swept
    finally:
        s.kill()


@pytest.mark.skipif(not pg_mode(), reason="two instances need PostgreSQL (KEYWARD_TEST_PG_URL)")
def test_caveat_and_expiry_reach_a_second_postgres_instance(tmp_path):
    schema = schema_file(tmp_path)
    a = Server(tmp_path / "a", extra_args=["--schema", schema])
    start_or_skip(a)
    b = Server(tmp_path / "b", db=a.db, secret=a.secret, extra_args=["--schema", schema])
    try:
        b.start()
        admin_a = Admin(a, a.token("root-admin", admin=True))
        admin_b = Admin(b, b.token("root-admin", admin=True))
        later = int(time.time()) + 7200
        w = admin_a.write([{"operation": "OPERATION_TOUCH", "relationship": r} for r in (
            doc_rel("d1", "alice", caveat="ip_allowed"),
            doc_rel("d2", "bob", expires=later),
            doc_rel("d3", "carol"))])
        rev = w.headers.get(REV)
        assert rev and rev.isdigit(), dict(w.headers)
        expect_written(docs(admin_b, headers={REV: rev}), later)
        # B restarts: its load from the database gives the same.
        assert b.stop() == 0
        b.start()
        admin_b = Admin(b, b.token("root-admin", admin=True))
        expect_written(docs(admin_b, headers={REV: rev}), later)
        # A TOUCH on A that drops the caveat and sets an expiry reaches B too.
        w = admin_a.write([{"operation": "OPERATION_TOUCH",
                            "relationship": doc_rel("d1", "alice", expires=later)}])
        got = docs(admin_b, headers={REV: w.headers[REV]})
        assert not got["d1"].get("optionalCaveat"), got["d1"]
        assert parse_ts(got["d1"]["optionalExpiresAt"]) == later, got["d1"]
    finally:
        b.kill()
        a.kill()
