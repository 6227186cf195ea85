"""atExactSnapshot at older revisions (issue 12 item 3; docs/API.md "atExactSnapshot"): every
read RPC answers as of a revision T1 after later writes (touches, deletes, caveats, expiring
relationships, a delete by filter), exactly as it answered when T1 was current; a
LookupResources stream paged with cursors at T1 keeps answering at T1 while writes go on, and
writers are not held up by a slow exact-snapshot stream; outside the window (older than the
change log, before a schema write, before the instance started) SpiceDB's OUT_OF_RANGE
"revision has expired" with the window in the message. With PostgreSQL, a second instance
answers at a revision it applied from the changelog."""
import json
import threading
import time

import pytest

from conftest import Admin, Server, ndjson, pg_mode, rel

SCHEMA_ADD = """
caveat snapok(allowed bool) { allowed }

definition sdoc {
  relation viewer: user | user:* | user with snapok | user with expiration | sgroup#member
  relation banned: user
  permission view = viewer - banned
}

definition sgroup {
  relation member: user | user with snapok
}
"""


def obj(s):
    t, i = s.split(":", 1)
    return {"objectType": t, "objectId": i}


def subj(s):
    t, i = s.split(":", 1)
    return {"object": {"objectType": t, "objectId": i}}


def post(adm, route, body, status=200):
    r = adm.post(route, json=body)
    assert r.status_code == status, (route, r.status_code, r.text)
    return r


def setup_schema(adm):
    text = post(adm, "/v1/schema/read", {}).json()["schemaText"]
    if "use expiration" not in text:
        text = "use expiration\n" + text
    post(adm, "/v1/schema/write", {"schema": text + SCHEMA_ADD})


def upd(op, resource, relation, subject, caveat=None, expires=None):
    r = rel(resource, relation, subject)
    if caveat is not None:
        r["optionalCaveat"] = {"caveatName": "snapok", **({"context": caveat} if caveat else {})}
    if expires:
        r["optionalExpiresAt"] = expires
    return {"operation": "OPERATION_" + op, "relationship": r}


def write(adm, *ups):
    r = post(adm, "/v1/relationships/write", {"updates": list(ups)})
    return r.json()["writtenAt"]["token"]


USERS = ["ann", "bob", "cid", "dee"]
DOCS = ["a", "b", "c", "d", "e"]


def exact(tok):
    return {"consistency": {"atExactSnapshot": {"token": tok}}}


def norm_tree(t):
    """An Expand tree with each leaf's subjects sorted: their order is the engine's internal
    one (unspecified, as in SpiceDB), which a snapshot's copy of the graph does not keep."""
    if "leaf" in t:
        t["leaf"]["subjects"] = sorted(t["leaf"]["subjects"], key=lambda x: json.dumps(x, sort_keys=True))
    for c in t.get("intermediate", {}).get("children", []):
        norm_tree(c)
    return t


def snapshot_answers(adm, cons):
    """Every read RPC's answer (tokens left out) under consistency `cons`."""
    out = {}
    ctxs = (None, {"allowed": True})
    for d in DOCS:
        for u in USERS:
            for perm in ("view", "viewer"):
                for ctx in ctxs:
                    body = dict(cons, resource=obj("sdoc:" + d), permission=perm,
                                subject=subj("user:" + u))
                    if ctx:
                        body["context"] = ctx
                    r = post(adm, "/v1/permissions/check", body).json()
                    out[("check", d, u, perm, bool(ctx))] = (r["permissionship"],
                                                            r.get("partialCaveatInfo"))
    items = [{"resource": obj("sdoc:" + d), "permission": "view", "subject": subj("user:" + u)}
             for d in DOCS for u in USERS]
    r = post(adm, "/v1/permissions/checkbulk", dict(cons, items=items)).json()
    out["bulk"] = [p["item"]["permissionship"] if "item" in p else p for p in r["pairs"]]
    for u in USERS:
        r = post(adm, "/v1/permissions/resources", dict(cons, resourceObjectType="sdoc",
                                                         permission="view", subject=subj("user:" + u)))
        out[("lr", u)] = sorted((x["resourceObjectId"], x["permissionship"]) for x in ndjson(r))
    for d in DOCS:
        r = post(adm, "/v1/permissions/subjects", dict(cons, resource=obj("sdoc:" + d),
                                                        permission="view", subjectObjectType="user"))
        out[("ls", d)] = sorted((x["subject"]["subjectObjectId"], x["subject"]["permissionship"],
                                 tuple(sorted(e["subjectObjectId"] for e in x.get("excludedSubjects", []))))
                                for x in ndjson(r))
        r = post(adm, "/v1/permissions/expand", dict(cons, resource=obj("sdoc:" + d),
                                                      permission="view")).json()
        out[("expand", d)] = norm_tree(r["treeRoot"])
    r = post(adm, "/v1/relationships/read", dict(cons, relationshipFilter={"resourceType": "sdoc"}))
    out["read"] = sorted(repr(sorted(x["relationship"].items())) for x in ndjson(r))
    r = post(adm, "/v1/relationships/read", dict(cons, relationshipFilter={"resourceType": "sgroup"}))
    out["read_groups"] = sorted(repr(sorted(x["relationship"].items())) for x in ndjson(r))
    return out


def tokens_of(adm, cons):
    """The revision each kind of answer reports under `cons`."""
    chk = dict(cons, resource=obj("sdoc:a"), permission="view", subject=subj("user:ann"))
    toks = {post(adm, "/v1/permissions/check", chk).json()["checkedAt"]["token"],
            post(adm, "/v1/permissions/expand", dict(cons, resource=obj("sdoc:a"),
                                                     permission="view")).json()["expandedAt"]["token"]}
    for x in ndjson(post(adm, "/v1/relationships/read",
                         dict(cons, relationshipFilter={"resourceType": "sdoc"}))):
        toks.add(x["readAt"]["token"])
    for x in ndjson(post(adm, "/v1/permissions/resources",
                         dict(cons, resourceObjectType="sdoc", permission="view",
                              subject=subj("user:ann")))):
        toks.add(x["lookedUpAt"]["token"])
    return toks


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "snap")
    s.start()
    yield s
    s.stop()


def admin_of(s):
    return Admin(s, s.token("root-admin", admin=True), sub="root-admin")


def test_every_read_answers_as_at_an_older_revision(server):
    adm = admin_of(server)
    setup_schema(adm)
    far = "2099-01-01T00:00:00Z"
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 4))
    write(adm,
          upd("TOUCH", "sdoc:a", "viewer", "user:ann"),
          upd("TOUCH", "sdoc:a", "viewer", "user:bob", caveat={}),
          upd("TOUCH", "sdoc:a", "viewer", "user:cid", caveat={"allowed": False}),
          upd("TOUCH", "sdoc:b", "viewer", "user:*"),
          upd("TOUCH", "sdoc:b", "banned", "user:dee"),
          upd("TOUCH", "sdoc:c", "viewer", "user:ann", expires=far),
          upd("TOUCH", "sdoc:c", "viewer", "user:bob", expires=soon),
          upd("TOUCH", "sdoc:d", "viewer", "sgroup:g#member"),
          upd("TOUCH", "sgroup:g", "member", "user:cid"),
          upd("TOUCH", "sgroup:g", "member", "user:dee", caveat={}))
    t1 = write(adm, upd("TOUCH", "sdoc:e", "viewer", "user:dee"))
    at_t1 = snapshot_answers(adm, exact(t1))
    assert tokens_of(adm, exact(t1)) == {t1}
    # later writes touch, delete, change caveats and expiries, add a wildcard, delete by filter
    write(adm, upd("DELETE", "sdoc:a", "viewer", "user:ann"),
          upd("TOUCH", "sdoc:a", "viewer", "user:bob"),
          upd("TOUCH", "sdoc:a", "viewer", "user:cid", caveat={"allowed": True}),
          upd("CREATE", "sdoc:a", "viewer", "user:dee", expires=far),
          upd("TOUCH", "sdoc:c", "viewer", "user:ann", caveat={}),
          upd("TOUCH", "sgroup:g", "member", "user:dee"))
    write(adm, upd("DELETE", "sdoc:b", "viewer", "user:*"),
          upd("TOUCH", "sdoc:e", "viewer", "user:*"),
          upd("TOUCH", "sdoc:e", "banned", "user:ann"),
          upd("DELETE", "sgroup:g", "member", "user:cid"))
    post(adm, "/v1/relationships/delete", {"relationshipFilter": {"resourceType": "sdoc",
                                                                  "optionalResourceId": "d"}})
    live = snapshot_answers(adm, {})
    assert live != at_t1  # the writes changed answers
    # the expiring relationship is judged at the request's time, at T1 as now
    time.sleep(max(0.0, 5 - (time.time() % 1)))
    at_t1_later = snapshot_answers(adm, exact(t1))
    assert at_t1_later[("check", "c", "bob", "viewer", False)][0] == \
        "PERMISSIONSHIP_NO_PERMISSION"
    assert at_t1[("check", "c", "bob", "viewer", False)][0] == "PERMISSIONSHIP_HAS_PERMISSION"
    for k in at_t1:
        if k in (("check", "c", "bob", "viewer", False), ("check", "c", "bob", "viewer", True),
                 ("check", "c", "bob", "view", False), ("check", "c", "bob", "view", True),
                 "bulk", ("lr", "bob"), ("ls", "c"), ("expand", "c"), "read"):
            continue  # sdoc:c@bob expired meanwhile: compared below
        assert at_t1_later[k] == at_t1[k], k
    assert "sdoc:c" not in repr([x for x in at_t1_later["read"] if "'bob'" in x and "'c'" in x])
    assert tokens_of(adm, exact(t1)) == {t1}
    # and the answers at T1 are still those of T1 on the items that did not expire
    assert at_t1_later[("check", "a", "ann", "view", False)][0] == "PERMISSIONSHIP_HAS_PERMISSION"
    assert live[("check", "a", "ann", "view", False)][0] == "PERMISSIONSHIP_NO_PERMISSION"
    assert at_t1_later[("check", "a", "bob", "view", False)][0] == \
        "PERMISSIONSHIP_CONDITIONAL_PERMISSION"
    assert at_t1_later[("check", "b", "cid", "view", False)][0] == "PERMISSIONSHIP_HAS_PERMISSION"
    assert at_t1_later[("check", "d", "cid", "view", False)][0] == "PERMISSIONSHIP_HAS_PERMISSION"


def test_a_stream_paged_at_t1_keeps_answering_at_t1_while_writes_go_on(server):
    adm = admin_of(server)
    setup_schema(adm)
    n = 1500
    for lo in range(0, n, 500):
        write(adm, *[upd("TOUCH", "sdoc:p%04d" % i, "viewer", "user:ann") for i in range(lo, lo + 500)])
    t1 = write(adm, upd("TOUCH", "sdoc:extra", "viewer", "user:bob"))
    want = sorted(["p%04d" % i for i in range(n)])
    lr = {"resourceObjectType": "sdoc", "permission": "view", "subject": subj("user:ann")}

    # paged with cursors, a write between every page: every page still at T1
    got, cursor, k = [], None, 0
    while True:
        body = dict(lr, optionalLimit=100, **exact(t1))
        if cursor:
            body["optionalCursor"] = cursor
        page = ndjson(post(adm, "/v1/permissions/resources", body))
        if not page:
            break
        assert {x["lookedUpAt"]["token"] for x in page} == {t1}
        got += [x["resourceObjectId"] for x in page]
        cursor = page[-1]["afterResultCursor"]
        write(adm, upd("DELETE", "sdoc:p%04d" % (n - 1 - k), "viewer", "user:ann"),
              upd("TOUCH", "sdoc:new%04d" % k, "viewer", "user:ann"))
        k += 1
    assert got == want

    # one slow unlimited stream at T1 (several engine chunks): writers go on meanwhile, each
    # answered promptly, and the stream still answers at T1
    t2 = write(adm, upd("TOUCH", "sdoc:extra2", "viewer", "user:bob"))
    cur_before = set(x["resourceObjectId"] for x in ndjson(post(adm, "/v1/permissions/resources", lr)))
    r = adm.post("/v1/permissions/resources", json=dict(lr, **exact(t2)), stream=True, timeout=60)
    assert r.status_code == 200, r.text
    lines = r.iter_lines()
    first = [json.loads(next(lines))["result"] for _ in range(10)]
    times = []
    for i in range(20):
        t0 = time.monotonic()
        write(adm, upd("DELETE", "sdoc:p%04d" % (i * 7), "viewer", "user:ann"),
              upd("TOUCH", "sdoc:late%02d" % i, "viewer", "user:ann"))
        times.append(time.monotonic() - t0)
        time.sleep(0.02)
    rest = [json.loads(x)["result"] for x in lines if x.strip()]
    r.close()
    ids = [x["resourceObjectId"] for x in first + rest]
    assert sorted(ids) == sorted(cur_before)
    assert {x["lookedUpAt"]["token"] for x in first + rest} == {t2}
    assert max(times) < 2.0, ("a writer waited on the exact-snapshot stream", times)


def test_outside_the_window_is_out_of_range(tmp_path):
    s = Server(tmp_path / "win", env_extra={"KEYWARD_SNAPSHOT_MAX_CHANGES": "3"})
    s.start()
    try:
        adm = admin_of(s)
        setup_schema(adm)
        t0 = write(adm, upd("TOUCH", "sdoc:a", "viewer", "user:ann"))
        t1 = write(adm, upd("TOUCH", "sdoc:a", "viewer", "user:bob"))
        chk = {"resource": obj("sdoc:a"), "permission": "view", "subject": subj("user:bob")}
        assert post(adm, "/v1/permissions/check", dict(chk, **exact(t0))).json()[
            "permissionship"] == "PERMISSIONSHIP_NO_PERMISSION"
        write(adm, *[upd("TOUCH", "sdoc:w", "viewer", "user:u%d" % i) for i in range(3)])
        # the change log holds at most 3 changes: T1's left it, so T0 cannot be rebuilt;
        # T1 still can (the 3 newer ones are kept), until one more change
        assert post(adm, "/v1/permissions/check", dict(chk, **exact(t1))).json()[
            "permissionship"] == "PERMISSIONSHIP_HAS_PERMISSION"
        refused_t0 = adm.post("/v1/permissions/check", json=dict(chk, **exact(t0)))
        write(adm, upd("DELETE", "sdoc:a", "viewer", "user:bob"))
        for r in (refused_t0, adm.post("/v1/permissions/check", json=dict(chk, **exact(t1)))):
            body = r.json()
            assert r.status_code == 400 and body["code"] == 11, r.text
            assert "invalid revision: revision has expired" in body["message"], body
            assert "retention window" in body["message"] and "at most 3" in body["message"], body
        # a schema write restarts the window
        t3 = write(adm, upd("TOUCH", "sdoc:b", "viewer", "user:ann"))
        text = post(adm, "/v1/schema/read", {}).json()["schemaText"]
        post(adm, "/v1/schema/write", {"schema": text + "\ndefinition snapextra {}\n"})
        r = adm.post("/v1/relationships/read", json=dict(exact(t3),
                                                         relationshipFilter={"resourceType": "sdoc"}))
        assert r.status_code == 400 and r.json()["code"] == 11, r.text
        assert "schema was written" in r.json()["message"], r.text
        # a restart empties the change log
        t4 = write(adm, upd("TOUCH", "sdoc:b", "viewer", "user:bob"))
        write(adm, upd("TOUCH", "sdoc:b", "viewer", "user:cid"))
        assert adm.post("/v1/permissions/check", json=dict(chk, **exact(t4))).status_code == 200
        s.stop()
        s.start()
        adm = admin_of(s)
        r = adm.post("/v1/permissions/check", json=dict(chk, **exact(t4)))
        assert r.status_code == 400 and r.json()["code"] == 11, r.text
        assert "this instance started" in r.json()["message"], r.text
    finally:
        s.stop()


@pytest.mark.skipif(not pg_mode(), reason="two instances need PostgreSQL (KEYWARD_TEST_PG_URL)")
def test_a_second_instance_answers_at_a_revision_it_applied_from_the_changelog(tmp_path):
    a = Server(tmp_path / "a")
    a.start()
    b = Server(tmp_path / "b", db=a.db, secret=a.secret)
    try:
        b.start()
        adm_a, adm_b = admin_of(a), admin_of(b)
        setup_schema(adm_a)
        time.sleep(0.5)
        t1 = write(adm_a, upd("TOUCH", "sdoc:m", "viewer", "user:ann"))
        chk = {"resource": obj("sdoc:m"), "permission": "view", "subject": subj("user:ann")}
        # B applies T1 from the changelog (atLeastAsFresh waits for it)
        r = post(adm_b, "/v1/permissions/check",
                 dict(chk, consistency={"atLeastAsFresh": {"token": t1}})).json()
        assert r["permissionship"] == "PERMISSIONSHIP_HAS_PERMISSION"
        t2 = write(adm_a, upd("DELETE", "sdoc:m", "viewer", "user:ann"))
        r = post(adm_b, "/v1/permissions/check",
                 dict(chk, consistency={"atLeastAsFresh": {"token": t2}})).json()
        assert r["permissionship"] == "PERMISSIONSHIP_NO_PERMISSION"
        r = post(adm_b, "/v1/permissions/check", dict(chk, **exact(t1))).json()
        assert r["permissionship"] == "PERMISSIONSHIP_HAS_PERMISSION"
        assert r["checkedAt"]["token"] == t1
    finally:
        b.kill()
        a.kill()


def test_schema_reads_answer_and_export_refuses_an_older_revision(server):
    """ReflectSchema at an older revision within the window answers (the schema then is the
    current one: a schema write restarts the window) without building a snapshot; the bulk
    export reads the store, which keeps only the current revision: OUT_OF_RANGE saying so."""
    adm = admin_of(server)
    setup_schema(adm)
    t1 = write(adm, upd("TOUCH", "sdoc:a", "viewer", "user:ann"))
    write(adm, upd("TOUCH", "sdoc:a", "viewer", "user:bob"))
    r = post(adm, "/v1/schema/reflectschema", exact(t1)).json()
    assert any(d["name"] == "sdoc" for d in r["definitions"]), r
    assert r["readAt"]["token"] == t1, r
    r = adm.post("/v1/relationships/exportbulk", json=exact(t1))
    assert r.status_code == 400 and r.json()["code"] == 11, r.text
    assert "revision has expired" in r.json()["message"] and "reads the store" in r.json()["message"]
    cur = write(adm, upd("TOUCH", "sdoc:a", "viewer", "user:cid"))
    lines = ndjson(post(adm, "/v1/relationships/exportbulk", exact(cur)))
    assert lines, "an export at the current revision answers"
