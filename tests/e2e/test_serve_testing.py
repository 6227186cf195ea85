"""`keyward serve-testing` (docs/API.md, "serve-testing"), over its HTTP/JSON gateway: one
empty in-memory instance per bearer token, isolated from every other token's; revisions,
cursors and Watch working in memory; the bounds (instances, an instance's memory) refused
with clear errors; a port already taken refused at start. The gRPC side is driven by the
official Node client's own suite (tests/authzed-node)."""
import json
import os
import re
import signal
import subprocess
import time
import uuid
from types import SimpleNamespace

import pytest
import requests

from test_v1_more import Watcher

BIN = os.environ.get("KEYWARD_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "keyward")

SCHEMA = """definition test/user {}
definition test/document {
  relation viewer: test/user
  permission view = viewer
}
"""


class ServeTesting:
    """serve-testing on free ports; .grpc and .http are the bound HOST:PORT."""

    def __init__(self, tmp_path, *args):
        self.err = open(tmp_path / ("st-%s.err" % uuid.uuid4().hex[:6]), "w+")
        self.p = subprocess.Popen(
            [BIN, "serve-testing", "--grpc-addr", "127.0.0.1:0", "--readonly-grpc-addr",
             "127.0.0.1:0", "--http-addr", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE, stderr=self.err, text=True)
        lines = [self.p.stdout.readline().strip() for _ in range(3)]
        assert lines[0].startswith("listening on grpc://"), (lines, self.log())
        assert lines[1].startswith("listening on grpc-readonly://"), (lines, self.log())
        assert lines[2].startswith("listening on http://"), (lines, self.log())
        self.grpc = lines[0][len("listening on grpc://"):]
        self.http = lines[2][len("listening on http://"):]
        self.port = int(self.http.rsplit(":", 1)[1])

    def log(self):
        self.err.flush()
        self.err.seek(0)
        return self.err.read()

    def post(self, token, route, body):
        h = {"Authorization": "Bearer " + token} if token is not None else {}
        return requests.post("http://%s%s" % (self.http, route), json=body, headers=h, timeout=30)

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        assert self.p.wait(timeout=30) == 0, self.log()
        self.err.close()


@pytest.fixture
def st(tmp_path):
    s = ServeTesting(tmp_path)
    yield s
    s.stop()


def rel(doc, user):
    return {"resource": {"objectType": "test/document", "objectId": doc}, "relation": "viewer",
            "subject": {"object": {"objectType": "test/user", "objectId": user}}}


def write(s, token, *pairs, op="OPERATION_CREATE"):
    r = s.post(token, "/v1/relationships/write",
               {"updates": [{"operation": op, "relationship": rel(d, u)} for d, u in pairs]})
    assert r.status_code == 200, r.text
    return r.json()["writtenAt"]["token"]


def check(s, token, doc, user):
    return s.post(token, "/v1/permissions/check", {
        "consistency": {"fullyConsistent": True},
        "resource": {"objectType": "test/document", "objectId": doc}, "permission": "view",
        "subject": {"object": {"objectType": "test/user", "objectId": user}}})


def test_each_token_is_its_own_empty_instance(st):
    a, b = "tok-a-" + uuid.uuid4().hex, "tok-b-" + uuid.uuid4().hex
    # a new instance is empty: no schema (SpiceDB: NOT_FOUND), no definition to check
    r = st.post(a, "/v1/schema/read", {})
    assert r.status_code == 404 and r.json()["code"] == 5, r.text
    r = check(st, a, "d1", "alice")
    assert r.status_code == 400 and r.json()["code"] == 9, r.text
    assert st.post(a, "/v1/schema/write", {"schema": SCHEMA}).status_code == 200
    rev = write(st, a, ("d1", "alice"))
    r = check(st, a, "d1", "alice")
    assert r.status_code == 200 and r.json()["permissionship"] == "PERMISSIONSHIP_HAS_PERMISSION"
    assert int(r.json()["checkedAt"]["token"]) >= int(rev)
    # B sees none of it: no schema, and with the same schema, not A's relationship
    r = st.post(b, "/v1/schema/read", {})
    assert r.status_code == 404, r.text
    assert check(st, b, "d1", "alice").json()["code"] == 9
    assert st.post(b, "/v1/schema/write", {"schema": SCHEMA}).status_code == 200
    r = check(st, b, "d1", "alice")
    assert r.json()["permissionship"] == "PERMISSIONSHIP_NO_PERMISSION", r.text
    r = st.post(b, "/v1/relationships/read", {"relationshipFilter": {"resourceType": "test/document"}})
    assert r.status_code == 200 and r.text.strip() == "", r.text
    # ... and A still has its own
    assert st.post(a, "/v1/schema/read", {}).json()["schemaText"].startswith("definition test/user")
    # a token shaped like a JWT is a token like any other
    jwt_like = "eyJhbGciOiJIUzI1NiJ9.e30." + uuid.uuid4().hex
    assert st.post(jwt_like, "/v1/schema/write", {"schema": SCHEMA}).status_code == 200
    assert check(st, jwt_like, "d1", "alice").json()["permissionship"] == \
        "PERMISSIONSHIP_NO_PERMISSION"


def test_no_token_is_unauthenticated(st):
    for h in (None, ""):
        r = st.post(h, "/v1/schema/read", {})
        assert r.status_code == 401 and r.json()["code"] == 16, r.text
    r = requests.post("http://%s/v1/schema/read" % st.http, json={},
                      headers={"Authorization": "Basic dXNlcjpwdw=="}, timeout=30)
    assert r.status_code == 401, r.text
    assert requests.get("http://%s/healthz" % st.http, timeout=30).status_code == 200


def test_cursors_and_watch_work_in_memory(st):
    tok = "tok-w-" + uuid.uuid4().hex
    assert st.post(tok, "/v1/schema/write", {"schema": SCHEMA}).status_code == 200
    write(st, tok, *[("doc%02d" % i, "ann") for i in range(5)])
    seen, cursor = [], None
    for _ in range(10):
        body = {"relationshipFilter": {"resourceType": "test/document"}, "optionalLimit": 2}
        if cursor:
            body["optionalCursor"] = {"token": cursor}
        r = st.post(tok, "/v1/relationships/read", body)
        assert r.status_code == 200, r.text
        page = [json.loads(x)["result"] for x in r.text.strip().splitlines()]
        if not page:
            break
        seen += [p["relationship"]["resource"]["objectId"] for p in page]
        cursor = page[-1]["afterResultCursor"]["token"]
    assert seen == ["doc%02d" % i for i in range(5)]
    w = Watcher(st, SimpleNamespace(headers={"Authorization": "Bearer " + tok}), {})
    try:
        rev = write(st, tok, ("doc09", "bob"))
        res = w.next()["result"]
        assert res["changesThrough"]["token"] == rev
        assert [(u["operation"], u["relationship"]["resource"]["objectId"])
                for u in res["updates"]] == [("OPERATION_TOUCH", "doc09")]
        # another token's write is not this instance's change
        other = "tok-o-" + uuid.uuid4().hex
        assert st.post(other, "/v1/schema/write", {"schema": SCHEMA}).status_code == 200
        write(st, other, ("doc10", "carl"))
        rev = write(st, tok, ("doc11", "dan"))
        res = w.next()["result"]
        assert res["changesThrough"]["token"] == rev
        assert res["updates"][0]["relationship"]["resource"]["objectId"] == "doc11"
    finally:
        w.close()


def test_instances_past_the_bound_are_refused(tmp_path):
    s = ServeTesting(tmp_path, "--max-instances", "2")
    try:
        for t in ("one", "two"):
            assert s.post(t, "/v1/schema/write", {"schema": SCHEMA}).status_code == 200
        r = s.post("three", "/v1/schema/write", {"schema": SCHEMA})
        assert r.status_code == 429 and r.json()["code"] == 8, r.text
        assert "maximum of 2 instances" in r.json()["message"]
        # the known tokens keep working
        assert s.post("two", "/v1/schema/read", {}).status_code == 200
    finally:
        s.stop()


def test_evict_lru_drops_the_least_recently_used_instance(tmp_path):
    """--evict-lru: past --max-instances a new token drops the least recently used idle
    instance (over HTTP and gRPC alike: the same registry); its token comes back empty."""
    s = ServeTesting(tmp_path, "--max-instances", "2", "--evict-lru", "true")
    try:
        for t in ("one", "two"):
            assert s.post(t, "/v1/schema/write", {"schema": SCHEMA}).status_code == 200
            write(s, t, ("d1", "alice"))
        assert check(s, "one", "d1", "alice").json()["permissionship"] == \
            "PERMISSIONSHIP_HAS_PERMISSION"  # "one" used last: "two" is the LRU
        assert s.post("three", "/v1/schema/write", {"schema": SCHEMA}).status_code == 200
        assert check(s, "one", "d1", "alice").json()["permissionship"] == \
            "PERMISSIONSHIP_HAS_PERMISSION"  # kept
        r = s.post("two", "/v1/schema/read", {})  # dropped: a new, empty instance
        assert r.status_code == 404 and r.json()["code"] == 5, r.text
        assert "instance dropped (least recently used)" in s.log()
    finally:
        s.stop()
    bad = subprocess.run([BIN, "serve-testing", "--evict-lru", "maybe"], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2 and "--evict-lru" in bad.stderr


def test_an_instance_past_its_memory_is_refused(tmp_path):
    s = ServeTesting(tmp_path, "--instance-memory-mib", "1")
    try:
        tok = "tok-m-" + uuid.uuid4().hex
        assert s.post(tok, "/v1/schema/write", {"schema": SCHEMA}).status_code == 200
        r = None
        for b in range(100):
            ups = [{"operation": "OPERATION_CREATE",
                    "relationship": rel("d-%03d-%03d-%s" % (b, i, "x" * 40), "u")}
                   for i in range(1000)]
            r = s.post(tok, "/v1/relationships/write", {"updates": ups})
            if r.status_code != 200:
                break
        assert r.status_code == 429 and r.json()["code"] == 8, r.text
        assert "in-memory database is full" in r.json()["message"]
        # earlier writes still answer; another token is not affected
        assert check(s, tok, "d-000-000-" + "x" * 40, "u").json()["permissionship"] == \
            "PERMISSIONSHIP_HAS_PERMISSION"
        assert s.post("other", "/v1/schema/write", {"schema": SCHEMA}).status_code == 200
    finally:
        s.stop()


def test_a_taken_port_is_an_error_and_help_describes_it(st, tmp_path):
    p = subprocess.run([BIN, "serve-testing", "--grpc-addr", st.grpc, "--readonly-grpc-addr",
                        "127.0.0.1:0", "--http-addr", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "cannot listen for gRPC on " + st.grpc in p.stderr
    assert p.stdout == ""
    h = subprocess.run([BIN, "serve-testing", "--help"], capture_output=True, text=True, timeout=30)
    assert h.returncode == 0
    for words in ("127.0.0.1:50051", "127.0.0.1:50052", "--max-instances", "--instance-memory-mib",
                  "Bearer"):
        assert words in h.stdout
    bad = subprocess.run([BIN, "serve-testing", "--max-instances", "0"], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2 and "--max-instances" in bad.stderr
