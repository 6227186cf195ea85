"""The SpiceDB v1 administration API over HTTP/JSON (admins only), including the default schema's
assertions from agentex.validation.yaml replayed through /v1/permissions/check and checkbulk."""
import os
import re
import uuid

import pytest

from conftest import DEFAULT_SCHEMA, VALIDATION_FILE, Admin, Client, ndjson, rel

V1 = ["/v1/relationships/write", "/v1/relationships/read", "/v1/relationships/delete",
      "/v1/permissions/check", "/v1/permissions/checkbulk", "/v1/permissions/resources",
      "/v1/permissions/subjects", "/v1/permissions/expand", "/v1/schema/read", "/v1/schema/write"]


def call(client, route, body, status=200):
    r = client.post(route, json=body)
    if r.status_code in (404, 405) and status not in (404, 405):
        pytest.fail("route POST %s is missing (%d %s)" % (route, r.status_code, r.text[:200]), pytrace=False)
    assert r.status_code == status, (route, r.status_code, r.text)
    return r


def v1_error(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert isinstance(body.get("detail"), str) and body["detail"]
    assert isinstance(body.get("code"), int), body
    assert body.get("message") == body["detail"], body
    return body


def obj(s):
    t, i = s.split(":", 1)
    return {"objectType": t, "objectId": i}


def subj(s):
    t, i = s.split(":", 1)
    return {"object": {"objectType": t, "objectId": i}}


def _valid_body(route):
    chk = {"resource": obj("agent:nothing"), "permission": "read", "subject": subj("user:nobody")}
    return {
        "/v1/relationships/write": {"updates": [{"operation": "OPERATION_TOUCH",
                                                 "relationship": rel("account:na-acct", "member", "user:na-user")}]},
        "/v1/relationships/read": {"relationshipFilter": {"resourceType": "account"}},
        "/v1/relationships/delete": {"relationshipFilter": {"resourceType": "account",
                                                            "optionalResourceId": "na-acct"}},
        "/v1/permissions/check": chk,
        "/v1/permissions/checkbulk": {"items": [chk]},
        "/v1/permissions/resources": {"resourceObjectType": "agent", "permission": "read",
                                      "subject": subj("user:nobody")},
        "/v1/permissions/subjects": {"resource": obj("agent:nothing"), "permission": "read",
                                     "subjectObjectType": "user"},
        "/v1/permissions/expand": {"resource": obj("agent:nothing"), "permission": "read"},
        "/v1/schema/read": {},
        "/v1/schema/write": {"schema": open(DEFAULT_SCHEMA, encoding="utf-8").read()},
    }[route]


@pytest.mark.parametrize("route", V1)
def test_v1_needs_admin(srv, tenant, admin, route):
    # a valid user who is an account admin, but not a /v1 administrator
    alice = tenant.user("alice")
    body = _valid_body(route)
    r = alice.post(route, json=body)
    assert r.status_code != 404 and r.status_code != 405, "route POST %s is missing" % route
    v1_error(r, 403)
    r = Client(srv).post(route, json=body)
    assert r.status_code == 401, r.text
    # admin must be the JSON boolean true: a false one is an ordinary caller (403), a
    # mistyped one makes the token invalid (401: claims are verified strictly)
    not_admin = Client(srv, srv.token("not-admin", extra={"admin": False}))
    assert not_admin.post(route, json=body).status_code == 403
    falsy = Client(srv, srv.token("not-admin", extra={"admin": "true"}))
    assert falsy.post(route, json=body).status_code == 401
    assert admin.read_rels("account", "na-acct") == []


def test_write_read_delete_tokens(admin):
    sfx = uuid.uuid4().hex[:8]
    acct = "acct-" + sfx
    r = call(admin, "/v1/relationships/write", {"updates": [
        {"operation": "OPERATION_CREATE", "relationship": rel("account:" + acct, "member", "user:u1-" + sfx)},
        {"operation": "OPERATION_TOUCH", "relationship": rel("account:" + acct, "admin", "user:u2-" + sfx)},
    ]})
    tok = r.json()["writtenAt"]["token"]
    assert isinstance(tok, str) and tok
    # read with and without consistency; the result carries the relationship
    for extra in ({}, {"consistency": {"fullyConsistent": True}},
                  {"consistency": {"atLeastAsFresh": {"token": tok}}}):
        body = {"relationshipFilter": {"resourceType": "account", "optionalResourceId": acct}}
        body.update(extra)
        rs = ndjson(call(admin, "/v1/relationships/read", body))
        got = sorted((x["relationship"]["relation"], x["relationship"]["subject"]["object"]["objectId"]) for x in rs)
        assert got == [("admin", "u2-" + sfx), ("member", "u1-" + sfx)], got
        assert all(x["relationship"]["resource"] == obj("account:" + acct) for x in rs)
    # CREATE of an existing relationship fails and writes nothing of the batch
    r = admin.post("/v1/relationships/write", json={"updates": [
        {"operation": "OPERATION_CREATE", "relationship": rel("account:" + acct, "member", "user:u3-" + sfx)},
        {"operation": "OPERATION_CREATE", "relationship": rel("account:" + acct, "member", "user:u1-" + sfx)}]})
    v1_error(r, 409)
    assert len(admin.read_rels("account", acct)) == 2
    # TOUCH is idempotent
    admin.touch(("account:" + acct, "member", "user:u1-" + sfx))
    assert len(admin.read_rels("account", acct)) == 2
    # DELETE through write
    r = admin.remove(("account:" + acct, "admin", "user:u2-" + sfx))
    assert r.json()["writtenAt"]["token"]
    assert [x["relation"] for x in admin.read_rels("account", acct)] == ["member"]
    # delete by filter
    r = call(admin, "/v1/relationships/delete",
             {"relationshipFilter": {"resourceType": "account", "optionalResourceId": acct}})
    assert r.json()["deletedAt"]["token"]
    r = call(admin, "/v1/relationships/read",
             {"relationshipFilter": {"resourceType": "account", "optionalResourceId": acct}})
    assert r.text.strip() == ""


def test_preconditions(admin):
    sfx = uuid.uuid4().hex[:8]
    acct = "pre-" + sfx
    flt = {"resourceType": "account", "optionalResourceId": acct, "optionalRelation": "admin"}
    upd = [{"operation": "OPERATION_TOUCH", "relationship": rel("account:" + acct, "member", "user:m-" + sfx)}]
    r = admin.post("/v1/relationships/write", json={
        "updates": upd, "optionalPreconditions": [{"operation": "OPERATION_MUST_MATCH", "filter": flt}]})
    v1_error(r, 400)
    assert admin.read_rels("account", acct) == []
    admin.write(upd, preconditions=[{"operation": "OPERATION_MUST_NOT_MATCH", "filter": flt}])
    assert len(admin.read_rels("account", acct)) == 1


def test_relationship_not_allowed_by_schema_is_400_naming_it(admin):
    sfx = uuid.uuid4().hex[:8]
    cases = [
        (rel("agent:a-" + sfx, "owner", "agent:b-" + sfx), ("owner", "agent")),
        (rel("agent:a-" + sfx, "bogusrel", "user:u-" + sfx), ("bogusrel",)),
        (rel("nosuchtype:a-" + sfx, "owner", "user:u-" + sfx), ("nosuchtype",)),
        (rel("agent:a-" + sfx, "read", "user:u-" + sfx), ("read",)),  # a permission, not a relation
        (rel("agent:a-" + sfx, "viewer", "account:acme#admin"), ("viewer", "account")),
    ]
    for relationship, words in cases:
        good = {"operation": "OPERATION_TOUCH", "relationship": rel("agent:a-" + sfx, "owner", "user:ok-" + sfx)}
        r = admin.post("/v1/relationships/write", json={"updates": [
            good, {"operation": "OPERATION_TOUCH", "relationship": relationship}]})
        body = v1_error(r, 400)
        for w in words:
            assert w in body["message"], (w, body)
        assert admin.read_rels("agent", "a-" + sfx) == [], "a refused batch wrote something"


def test_v1_malformed_bodies(admin):
    for raw in (b"{", b"[]", b'{"updates": 5}', b'{"updates": [{"operation": "OPERATION_NOPE"}]}'):
        r = admin.post("/v1/relationships/write", data=raw, headers={"Content-Type": "application/json"})
        assert r.status_code in (400, 422), (raw, r.status_code, r.text)
        v1_error(r, r.status_code)


def _load_validation():
    text = open(VALIDATION_FILE, encoding="utf-8").read()
    rels = re.search(r"^relationships: \|-\n((?:  .*\n?)+)", text, re.M).group(1).split("\n")
    rels = [l.strip() for l in rels if l.strip()]
    t = re.search(r"assertTrue:\n((?:    - .*\n)+)", text).group(1)
    f = re.search(r"assertFalse:\n((?:    - .*\n?)+)", text).group(1)
    unq = lambda block: [l.strip()[2:].strip().strip('"') for l in block.split("\n") if l.strip()]
    return rels, unq(t), unq(f)


def _parse(tuple_text, sfx):
    m = re.match(r"^(\w+):([\w-]+)#(\w+)@(\w+):([\w-]+)(?:#(\w+))?$", tuple_text)
    assert m, tuple_text
    rt, rid, r_, st, sid, srel = m.groups()
    return ("%s:%s-%s" % (rt, rid, sfx), r_, "%s:%s-%s%s" % (st, sid, sfx, "#" + srel if srel else ""))


def test_validation_file_assertions_over_http(admin):
    rels, yes, no = _load_validation()
    sfx = uuid.uuid4().hex[:8]
    admin.touch(*[_parse(t, sfx) for t in rels])
    items, want = [], []
    for expected, group in ((True, yes), (False, no)):
        for a in group:
            res, perm, sub = _parse(a, sfx)
            assert admin.check(res, perm, sub) is expected, a
            items.append({"resource": obj(res), "permission": perm, "subject": subj(sub)})
            want.append(expected)
    r = call(admin, "/v1/permissions/checkbulk", {"items": items})
    pairs = r.json()["pairs"]
    assert len(pairs) == len(items)
    for p, it, w in zip(pairs, items, want):
        assert p["request"]["resource"] == it["resource"] and p["request"]["permission"] == it["permission"]
        assert (p["item"]["permissionship"] == "PERMISSIONSHIP_HAS_PERMISSION") is w, (it, p)
    assert r.json()["checkedAt"]["token"]

    # LookupResources: who may read which agent
    r = call(admin, "/v1/permissions/resources", {"resourceObjectType": "agent", "permission": "read",
                                                   "subject": subj("user:bob-" + sfx)})
    assert [x["resourceObjectId"] for x in ndjson(r)] == ["x-" + sfx]
    for x in ndjson(r):
        assert x["permissionship"] == "LOOKUP_PERMISSIONSHIP_HAS_PERMISSION"
    r = call(admin, "/v1/permissions/resources", {"resourceObjectType": "agent", "permission": "read",
                                                   "subject": subj("user:carol-" + sfx)})
    assert r.text.strip() == ""
    r = call(admin, "/v1/permissions/resources", {"resourceObjectType": "agent_api_key", "permission": "read",
                                                   "subject": subj("user:dave-" + sfx)})
    assert sorted(x["resourceObjectId"] for x in ndjson(r)) == ["k2-" + sfx]

    # LookupSubjects
    r = call(admin, "/v1/permissions/subjects", {"resource": obj("agent:x-" + sfx), "permission": "read",
                                                  "subjectObjectType": "user"})
    got = sorted(x["subject"]["subjectObjectId"] for x in ndjson(r))
    assert got == sorted(u + "-" + sfx for u in ("alice", "bob", "gina", "dave")), got
    r = call(admin, "/v1/permissions/subjects", {"resource": obj("agent_api_key:k-" + sfx), "permission": "delete",
                                                  "subjectObjectType": "user"})
    assert [x["subject"]["subjectObjectId"] for x in ndjson(r)] == ["gina-" + sfx]

    # Expand
    r = call(admin, "/v1/permissions/expand", {"resource": obj("agent:x-" + sfx), "permission": "read"})
    body = r.json()
    assert body["expandedAt"]["token"]
    root = body["treeRoot"]
    assert root["expandedObject"] == obj("agent:x-" + sfx) and root["expandedRelation"] == "read"
    assert ("intermediate" in root) or ("leaf" in root)


def test_check_unknown_permission_is_400(admin):
    r = admin.post("/v1/permissions/check", json={"resource": obj("agent:zz"), "permission": "fly",
                                                   "subject": subj("user:u")})
    v1_error(r, 400)
    assert "fly" in r.json()["message"]


def test_schema_read_and_write(srv, admin):
    r = call(admin, "/v1/schema/read", {})
    text = r.json()["schemaText"]
    for d in ("definition user", "definition service_account", "definition account",
              "definition agent ", "definition agent_api_key"):
        assert d in text, d
    # an invalid schema is refused (400) and changes nothing
    r = admin.post("/v1/schema/write", json={"schema": "definition broken { relation"})
    v1_error(r, 400)
    assert call(admin, "/v1/schema/read", {}).json()["schemaText"] == text
    # a schema missing what the routes need is refused too
    r = admin.post("/v1/schema/write", json={"schema": "definition user {}"})
    assert r.status_code == 400, r.text
    assert call(admin, "/v1/schema/read", {}).json()["schemaText"] == text
    # writing the same text back succeeds with a token and keeps everything working
    r = call(admin, "/v1/schema/write", {"schema": text})
    assert r.json()["writtenAt"]["token"]
    assert call(admin, "/v1/schema/read", {}).json()["schemaText"] == text
    assert Admin(srv, srv.token("root-admin", admin=True)).check("agent:none", "read", "user:none") is False
