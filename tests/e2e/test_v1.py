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


# ---- refusing what is not implemented (issue 8, item 4; docs/API.md "Refused fields") ----
#
# A member keyward does not know: 400, code 3 (INVALID_ARGUMENT), naming it. A member it knows
# but does not implement: 501, code 12 (UNIMPLEMENTED), naming it and why. Either way nothing
# changes: a refused write writes nothing, a refused read answers nothing.


def refused(r, status, code, *words):
    body = v1_error(r, status)
    assert body["code"] == code, body
    for w in words:
        assert w in body["message"], (w, body)
    return body


def unimplemented(r, *words):
    return refused(r, 501, 12, *words)


def invalid(r, *words):
    return refused(r, 400, 3, *words)


def _current(admin):
    """The revision the engine answers at now (a check without consistency reports it)."""
    r = call(admin, "/v1/permissions/check", {"resource": obj("agent:cur-none"), "permission": "read",
                                              "subject": subj("user:cur-none")})
    return r.json()["checkedAt"]["token"]


def _upd(acct, user, **extra):
    relationship = rel("account:" + acct, "member", "user:" + user)
    relationship.update(extra)
    return {"operation": "OPERATION_TOUCH", "relationship": relationship}


def test_expiry_where_the_schema_allows_none_is_refused_and_nothing_is_written(admin):
    # The default schema declares no `with expiration`: an expiry, past or future, is a
    # relationship the schema does not allow (SpiceDB: INVALID_ARGUMENT), alone or after a
    # valid update of the same batch, and nothing of the batch is written.
    sfx = uuid.uuid4().hex[:8]
    acct = "exp-" + sfx
    for when in ("2020-01-01T00:00:00Z", "2999-01-01T00:00:00Z"):
        for ups in ([_upd(acct, "u-" + sfx, optionalExpiresAt=when)],
                    [_upd(acct, "ok-" + sfx), _upd(acct, "u-" + sfx, optionalExpiresAt=when)]):
            r = admin.post("/v1/relationships/write", json={"updates": ups})
            assert r.status_code == 400, r.text
            assert r.json()["code"] == 3, r.text
            assert admin.read_rels("account", acct) == []
    assert admin.check("account:" + acct, "member", "user:u-" + sfx) is False
    # null is the field unset: the write goes through
    admin.write([_upd(acct, "u-" + sfx, optionalExpiresAt=None)])
    assert len(admin.read_rels("account", acct)) == 1


def test_caveat_the_schema_does_not_declare_is_refused_and_nothing_is_written(admin):
    acct = "cav-" + uuid.uuid4().hex[:8]
    r = admin.post("/v1/relationships/write", json={"updates": [
        _upd(acct, "u", optionalCaveat={"caveatName": "only_weekdays", "context": {}})]})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == 3, r.text
    assert admin.read_rels("account", acct) == []


def test_unknown_fields_are_refused_naming_them(admin):
    acct = "unk-" + uuid.uuid4().hex[:8]
    good = _upd(acct, "u")
    # on the request, an update, the relationship, its resource and subject, a filter
    nested = [
        {"updates": [good], "bogus": 1},
        {"updates": [dict(good, bogus=1)]},
        {"updates": [_upd(acct, "u", bogus=1)]},
        {"updates": [{"operation": "OPERATION_TOUCH", "relationship": dict(
            rel("account:" + acct, "member", "user:u"), resource={"objectType": "account",
                                                                 "objectId": acct, "bogus": 1})}]},
        {"updates": [{"operation": "OPERATION_TOUCH", "relationship": dict(
            rel("account:" + acct, "member", "user:u"),
            subject={"object": {"objectType": "user", "objectId": "u"}, "bogus": 1})}]},
        {"updates": [good], "optionalPreconditions": [{"operation": "OPERATION_MUST_NOT_MATCH",
                                                       "filter": {"resourceType": "account",
                                                                  "bogus": 1}}]},
        # consistency is not a member of WriteRelationshipsRequest
        {"updates": [good], "consistency": {"fullyConsistent": True}},
    ]
    for body in nested:
        r = admin.post("/v1/relationships/write", json=body)
        word = "consistency" if "consistency" in body else "bogus"
        invalid(r, word, "unknown field")
        assert admin.read_rels("account", acct) == [], body
    # every route refuses an unknown top-level member
    for route in V1:
        if route == "/v1/schema/write":
            continue  # covered below without rewriting the schema
        body = dict(_valid_body(route), bogus=1)
        invalid(admin.post(route, json=body), "bogus", "unknown field")
    invalid(admin.post("/v1/schema/write", json={"bogus": 1, "schema": "definition user {}"}),
            "bogus")
    invalid(admin.post("/v1/schema/read", json={"consistency": {"fullyConsistent": True}}),
            "consistency", "ReadSchemaRequest")
    assert admin.read_rels("account", acct) == []


def test_original_proto_names_are_accepted_as_grpc_gateway_does(admin):
    """proto3 JSON: a field may come under its proto (snake_case) name; enums as numbers."""
    acct = "snake-" + uuid.uuid4().hex[:8]
    r = call(admin, "/v1/relationships/write", {"updates": [{
        "operation": 2, "relationship": {
            "resource": {"object_type": "account", "object_id": acct}, "relation": "member",
            "subject": {"object": {"object_type": "user", "object_id": "u"},
                        "optional_relation": ""}}}]})
    token = r.json()["writtenAt"]["token"]
    r = call(admin, "/v1/relationships/read", {
        "relationship_filter": {"resource_type": "account", "optional_resource_id": acct},
        "consistency": {"at_least_as_fresh": {"token": token}}})
    rels = ndjson(r)
    assert [x["relationship"]["subject"]["object"]["objectId"] for x in rels] == ["u"]
    r = call(admin, "/v1/permissions/check", {
        "resource": obj("account:" + acct), "permission": "member", "subject": subj("user:u"),
        "with_tracing": False})
    assert r.json()["permissionship"] == "PERMISSIONSHIP_HAS_PERMISSION"
    # one field under both of its names is refused, as protojson refuses it
    r = admin.post("/v1/permissions/check", json={
        "resource": obj("account:" + acct), "permission": "member", "subject": subj("user:u"),
        "with_tracing": False, "withTracing": False})
    invalid(r, "duplicate", "withTracing")
    # an unknown enum number or name is refused
    invalid(admin.post("/v1/relationships/write", json={"updates": [dict(_upd(acct, "v"), operation=9)]}),
            "operation")
    assert len(admin.read_rels("account", acct)) == 1


def test_duplicate_members_are_refused(admin):
    acct = "dup-" + uuid.uuid4().hex[:8]
    # the refused member first, a null one after: with the last one winning it would pass
    raw = ('{"updates": [{"operation": "OPERATION_TOUCH", "relationship": {'
           '"resource": {"objectType": "account", "objectId": "%s"}, "relation": "member", '
           '"subject": {"object": {"objectType": "user", "objectId": "u"}}, '
           '"optionalExpiresAt": "2020-01-01T00:00:00Z", "optionalExpiresAt": null}}]}' % acct)
    r = admin.post("/v1/relationships/write", data=raw, headers={"Content-Type": "application/json"})
    invalid(r, "duplicate", "optionalExpiresAt")
    assert admin.read_rels("account", acct) == []


def test_transaction_metadata_is_accepted(admin):
    # SpiceDB accepts optionalTransactionMetadata on writes and deletes (the official Node
    # client's own suite writes with it); keyward accepts it and does not keep it.
    acct = "meta-" + uuid.uuid4().hex[:8]
    body = call(admin, "/v1/relationships/write", {
        "updates": [_upd(acct, "u")], "optionalTransactionMetadata": {"reason": "audit"}})
    assert body.json()["writtenAt"]["token"]
    assert len(admin.read_rels("account", acct)) == 1
    call(admin, "/v1/relationships/write", {"updates": [_upd(acct, "v")],
                                            "optionalTransactionMetadata": {}})
    assert len(admin.read_rels("account", acct)) == 2
    call(admin, "/v1/relationships/delete", {
        "relationshipFilter": {"resourceType": "account", "optionalResourceId": acct},
        "optionalTransactionMetadata": {"reason": "audit"}})
    assert admin.read_rels("account", acct) == []
    # still a Struct: anything else is malformed
    r = admin.post("/v1/relationships/write", json={
        "updates": [_upd(acct, "u")], "optionalTransactionMetadata": "audit"})
    assert r.status_code == 400, r.text
    assert admin.read_rels("account", acct) == []


def test_partial_deletions_and_id_prefix(admin):
    acct = "part-" + uuid.uuid4().hex[:8]
    admin.touch(("account:" + acct, "member", "user:a"), ("account:" + acct, "member", "user:b"),
                ("account:" + acct, "member", "user:c"))
    flt = {"resourceType": "account", "optionalResourceId": acct}
    # more matches than the limit without partial deletions: SpiceDB's INVALID_ARGUMENT
    r = admin.post("/v1/relationships/delete", json={"relationshipFilter": flt, "optionalLimit": 2})
    body = invalid(r, "found more than 2 relationships")
    assert body["details"][0]["reason"] == "ERROR_REASON_TOO_MANY_RELATIONSHIPS_FOR_TRANSACTIONAL_DELETE"
    assert body["details"][0]["domain"] == "authzed.com"
    assert body["details"][0]["metadata"]["limit"] == "2"
    assert len(admin.read_rels("account", acct)) == 3
    # partial: the first two in Read order go, the answer says PARTIAL
    r = call(admin, "/v1/relationships/delete", {"relationshipFilter": flt, "optionalLimit": 2,
                                                 "optionalAllowPartialDeletions": True})
    assert r.json()["relationshipsDeletedCount"] == "2"
    assert r.json()["deletionProgress"] == "DELETION_PROGRESS_PARTIAL"
    assert [x["subject"]["object"]["objectId"] for x in admin.read_rels("account", acct)] == ["c"]
    r = call(admin, "/v1/relationships/delete", {"relationshipFilter": flt, "optionalLimit": 2,
                                                 "optionalAllowPartialDeletions": True})
    assert r.json()["deletionProgress"] == "DELETION_PROGRESS_COMPLETE"
    assert r.json()["relationshipsDeletedCount"] == "1"
    # a limit over SpiceDB's maximum
    body = invalid(admin.post("/v1/relationships/delete", json={"relationshipFilter": flt,
                                                                "optionalLimit": 1001}),
                   "greater than maximum allowed of 1000")
    assert body["details"][0]["reason"] == "ERROR_REASON_EXCEEDS_MAXIMUM_ALLOWABLE_LIMIT"
    # resource id prefixes, on read and delete
    pre = "pfx" + uuid.uuid4().hex[:8]
    admin.touch(("account:%s-1" % pre, "member", "user:a"), ("account:%s-2" % pre, "member", "user:a"),
                ("account:x%s" % pre, "member", "user:a"))
    pf = {"resourceType": "account", "optionalResourceIdPrefix": pre}
    got = ndjson(call(admin, "/v1/relationships/read", {"relationshipFilter": pf}))
    assert [x["relationship"]["resource"]["objectId"] for x in got] == [pre + "-1", pre + "-2"]
    invalid(admin.post("/v1/relationships/read", json={"relationshipFilter": dict(
        pf, optionalResourceId=pre + "-1")}), "optionalResourceIdPrefix")
    r = call(admin, "/v1/relationships/delete", {"relationshipFilter": pf})
    assert r.json()["relationshipsDeletedCount"] == "2"
    assert ndjson(call(admin, "/v1/relationships/read", {"relationshipFilter": pf})) == []
    assert len(admin.read_rels("account", "x" + pre)) == 1


def test_filters_without_resource_type(admin):
    """SpiceDB's RelationshipFilter does not require resourceType: a subject filter alone
    reads and deletes across every resource type."""
    user = "nort-" + uuid.uuid4().hex[:8]
    acct = "acct-" + user
    admin.touch(("account:" + acct, "member", "user:" + user), ("account:" + acct, "admin", "user:" + user))
    flt = {"optionalSubjectFilter": {"subjectType": "user", "optionalSubjectId": user}}
    got = ndjson(call(admin, "/v1/relationships/read", {"relationshipFilter": flt}))
    assert [(x["relationship"]["resource"]["objectType"], x["relationship"]["relation"]) for x in got] == [
        ("account", "admin"), ("account", "member")]
    # a relation or a resource id needs the type; an empty filter is refused
    invalid(admin.post("/v1/relationships/read", json={"relationshipFilter": dict(flt, optionalRelation="member")}),
            "resource type")
    invalid(admin.post("/v1/relationships/read", json={"relationshipFilter": {}}), "resource type")
    r = call(admin, "/v1/relationships/delete", {"relationshipFilter": flt})
    assert r.json()["relationshipsDeletedCount"] == "2"
    assert ndjson(call(admin, "/v1/relationships/read", {"relationshipFilter": flt})) == []


def _walk_trace(t, subject):
    """Every node of a CheckDebugTrace has SpiceDB's fields; yields the nodes."""
    assert set(t) >= {"resource", "permission", "permissionType", "subject", "result",
                      "caveatEvaluationInfo", "duration", "optionalExpiresAt"}, t
    assert t["subject"]["object"] == subject["object"]
    assert t["permissionType"] in ("PERMISSION_TYPE_PERMISSION", "PERMISSION_TYPE_RELATION")
    assert t["duration"].endswith("s") and float(t["duration"][:-1]) >= 0
    # the resolution is a oneof: exactly one of the two
    assert ("wasCachedResult" in t) != ("subProblems" in t), t
    yield t
    for sub in t.get("subProblems", {}).get("traces", []):
        yield from _walk_trace(sub, subject)


def test_with_tracing_returns_spicedb_debug_traces(admin):
    """withTracing: true answers debugTrace {check: CheckDebugTrace, schemaUsed} (issue 12),
    a tree whose root is the check's own answer."""
    acct = "tr-" + uuid.uuid4().hex[:8]
    admin.touch(("account:" + acct, "member", "user:" + acct))
    who = subj("user:" + acct)
    chk = {"resource": obj("account:" + acct), "permission": "gate", "subject": who}
    r = call(admin, "/v1/permissions/check", dict(chk, withTracing=True))
    body = r.json()
    assert body["permissionship"] == "PERMISSIONSHIP_HAS_PERMISSION"
    dbg = body["debugTrace"]
    assert "definition account" in dbg["schemaUsed"]
    root = dbg["check"]
    assert root["resource"] == obj("account:" + acct) and root["permission"] == "gate"
    assert root["permissionType"] == "PERMISSION_TYPE_PERMISSION"
    assert root["result"] == "PERMISSIONSHIP_HAS_PERMISSION"
    # gate = admin + member: both relations are sub-problems; member found directly
    subs = {x["permission"]: x for x in root["subProblems"]["traces"]}
    assert subs["admin"]["result"] == "PERMISSIONSHIP_NO_PERMISSION"
    assert subs["member"]["result"] == "PERMISSIONSHIP_HAS_PERMISSION"
    assert subs["member"]["permissionType"] == "PERMISSION_TYPE_RELATION"
    assert subs["member"]["subProblems"] == {"traces": []}
    assert len(list(_walk_trace(root, who))) >= 3
    # without withTracing: debugTrace null
    assert call(admin, "/v1/permissions/check", chk).json()["debugTrace"] is None
    # a deeper permission: the root's answer is the untraced check's, for yes and no
    for perm, sub in (("manage", who), ("create_agent", who), ("gate", subj("user:nobody"))):
        c = dict(chk, permission=perm, subject=sub)
        want = call(admin, "/v1/permissions/check", c).json()["permissionship"]
        t = call(admin, "/v1/permissions/check", dict(c, withTracing=True)).json()["debugTrace"]
        assert t["check"]["result"] == want
        list(_walk_trace(t["check"], sub))
    # CheckBulkPermissions: a trace per item
    pairs = call(admin, "/v1/permissions/checkbulk", {
        "items": [chk, dict(chk, subject=subj("user:nobody"))], "withTracing": True}).json()["pairs"]
    assert [p["item"]["permissionship"] for p in pairs] == [
        "PERMISSIONSHIP_HAS_PERMISSION", "PERMISSIONSHIP_NO_PERMISSION"]
    for p in pairs:
        assert p["item"]["debugTrace"]["check"]["result"] == p["item"]["permissionship"]
        assert "definition account" in p["item"]["debugTrace"]["schemaUsed"]
    assert call(admin, "/v1/permissions/checkbulk", {"items": [chk]}).json()["pairs"][0][
        "item"]["debugTrace"] is None


def test_with_tracing_is_a_bool_and_context_is_taken(admin):
    chk = {"resource": obj("agent:nothing"), "permission": "read", "subject": subj("user:nobody")}
    invalid(admin.post("/v1/permissions/check", json=dict(chk, withTracing="yes")), "withTracing")
    # a request context is handed to the engine's caveat evaluation (no caveat reads it here)
    ctx = {"ip": "10.0.0.1", "n": 3}
    r = call(admin, "/v1/permissions/check", dict(chk, context=ctx))
    assert r.json()["permissionship"] == "PERMISSIONSHIP_NO_PERMISSION"
    assert r.json()["partialCaveatInfo"] is None
    pairs = call(admin, "/v1/permissions/checkbulk", {"items": [chk, dict(chk, context=ctx)]}).json()["pairs"]
    assert [p["item"]["permissionship"] for p in pairs] == ["PERMISSIONSHIP_NO_PERMISSION"] * 2
    assert pairs[1]["request"]["context"] == ctx
    call(admin, "/v1/permissions/resources", {
        "resourceObjectType": "agent", "permission": "read", "subject": subj("user:nobody"),
        "context": ctx})
    call(admin, "/v1/permissions/subjects", {
        "resource": obj("agent:nothing"), "permission": "read", "subjectObjectType": "user",
        "context": ctx})
    invalid(admin.post("/v1/permissions/check", json=dict(chk, context=[1])), "context")
    # false and an empty context ask for nothing
    r = call(admin, "/v1/permissions/check", dict(chk, withTracing=False, context={}))
    assert r.json()["permissionship"] == "PERMISSIONSHIP_NO_PERMISSION"


def test_expires_at_and_caveat_are_decoded_then_checked_against_the_schema(admin):
    """optionalExpiresAt is RFC 3339 (Z or an offset) and optionalCaveat {caveatName, context};
    a malformed one is 400; a well-formed one on a relation the schema gives no
    `with expiration` is 400 too, naming the trait."""
    acct = "ts-" + uuid.uuid4().hex[:8]
    for bad in ("garbage", "2030-13-01T00:00:00Z", "2030-02-30T00:00:00Z", "2030-01-01 00:00:00Z",
                "2030-01-01T00:00:00", 12):
        invalid(admin.post("/v1/relationships/write", json={"updates": [
            _upd(acct, "u", optionalExpiresAt=bad)]}), "optionalExpiresAt")
    for good in ("2030-01-01T00:00:00+02:00", "2030-01-01T00:00:00.123456789Z"):
        invalid(admin.post("/v1/relationships/write", json={"updates": [
            _upd(acct, "u", optionalExpiresAt=good)]}), "with expiration")
    invalid(admin.post("/v1/relationships/write", json={"updates": [
        _upd(acct, "u", optionalCaveat={"context": {}})]}), "caveatName")
    invalid(admin.post("/v1/relationships/write", json={"updates": [
        _upd(acct, "u", optionalCaveat={"caveatName": "c", "nope": 1})]}), "nope")
    assert admin.read_rels("account", acct) == []


def test_consistency_is_one_known_requirement(admin):
    body = {"relationshipFilter": {"resourceType": "account", "optionalResourceId": "none"}}
    tok = {"token": _current(admin)}
    for cons, word in (({"atLeastAsFresh": tok, "fullyConsistent": True}, "only one"),
                       ({"minimizeLatency": False}, "minimizeLatency"),
                       ({"fullyConsistent": False}, "fullyConsistent"),
                       ({"atLeastAsFresh": dict(tok, extra=1)}, "extra"),
                       ({"atLeastAsFresh": {"token": "x"}}, "ZedToken"),
                       ({"eventually": True}, "eventually")):
        invalid(admin.post("/v1/relationships/read", json=dict(body, consistency=cons)), word)
    for cons in ({"minimizeLatency": True}, {"fullyConsistent": True}, {"atLeastAsFresh": tok},
                 {"atLeastAsFresh": tok, "atExactSnapshot": None}):
        call(admin, "/v1/relationships/read", dict(body, consistency=cons))


def test_at_exact_snapshot_answers_at_the_current_revision_and_older_ones(admin):
    sfx = uuid.uuid4().hex[:8]
    acct, user = "snap-" + sfx, "u-" + sfx
    admin.touch(("account:" + acct, "member", "user:" + user))
    now = _current(admin)
    exact = {"consistency": {"atExactSnapshot": {"token": now}}}
    chk = {"resource": obj("account:" + acct), "permission": "member", "subject": subj("user:" + user)}
    reads = [
        ("/v1/permissions/check", chk, "checkedAt"),
        ("/v1/permissions/checkbulk", {"items": [chk]}, "checkedAt"),
        ("/v1/permissions/expand", {"resource": obj("account:" + acct), "permission": "member"},
         "expandedAt"),
        ("/v1/relationships/read", {"relationshipFilter": {"resourceType": "account",
                                                           "optionalResourceId": acct}}, "readAt"),
        ("/v1/permissions/resources", {"resourceObjectType": "account", "permission": "member",
                                       "subject": subj("user:" + user)}, "lookedUpAt"),
        ("/v1/permissions/subjects", {"resource": obj("account:" + acct), "permission": "member",
                                      "subjectObjectType": "user"}, "lookedUpAt"),
    ]
    # the current revision: answered, at exactly that revision
    for route, body, at in reads:
        r = call(admin, route, dict(body, **exact))
        if at in ("readAt", "lookedUpAt"):
            lines = ndjson(r)
            assert len(lines) == 1 and lines[0][at]["token"] == now, (route, r.text)
        else:
            assert r.json()[at]["token"] == now, (route, r.text)
    assert call(admin, "/v1/permissions/check", dict(chk, **exact)).json()["permissionship"] == \
        "PERMISSIONSHIP_HAS_PERMISSION"
    # a snapshot taken before a delete: never answered at the newer revision
    admin.remove(("account:" + acct, "member", "user:" + user))
    later = _current(admin)
    assert int(later) > int(now)
    # (an older revision within the snapshot window is answered as it was: test_v1_snapshot.py;
    # one older than the window is SpiceDB's OUT_OF_RANGE, "revision has expired")
    for route, body, at in reads:
        r = call(admin, route, dict(body, **exact))
        if at in ("readAt", "lookedUpAt"):
            lines = ndjson(r)
            assert len(lines) == 1 and lines[0][at]["token"] == now, (route, r.text)
        else:
            assert r.json()[at]["token"] == now, (route, r.text)
    assert call(admin, "/v1/permissions/check", dict(chk, **exact)).json()["permissionship"] == \
        "PERMISSIONSHIP_HAS_PERMISSION"
    assert admin.check("account:" + acct, "member", "user:" + user) is False


def test_wildcard_option_exclude_leaves_the_wildcard_out(tmp_path):
    from conftest import Server
    s = Server(tmp_path / "wild")
    s.start()
    try:
        adm = Admin(s, s.token("root-admin", admin=True))
        text = call(adm, "/v1/schema/read", {}).json()["schemaText"]
        text += "\ndefinition wdoc {\n  relation viewer: user | user:*\n  permission view = viewer\n}\n"
        call(adm, "/v1/schema/write", {"schema": text})
        adm.touch(("wdoc:d", "viewer", "user:*"), ("wdoc:d", "viewer", "user:ann"))
        ls = {"resource": obj("wdoc:d"), "permission": "view", "subjectObjectType": "user"}
        ids = lambda r: sorted(x["subject"]["subjectObjectId"] for x in ndjson(r))
        assert ids(call(adm, "/v1/permissions/subjects", ls)) == ["*", "ann"]
        assert ids(call(adm, "/v1/permissions/subjects",
                        dict(ls, wildcardOption="WILDCARD_OPTION_INCLUDE_WILDCARDS"))) == ["*", "ann"]
        assert ids(call(adm, "/v1/permissions/subjects",
                        dict(ls, wildcardOption="WILDCARD_OPTION_EXCLUDE_WILDCARDS"))) == ["ann"]
    finally:
        s.stop()


def test_at_exact_snapshot_is_exact_while_writes_race(srv):
    """One thread flips a relationship (each revision's state is known from its token) while
    another checks at exactly the newest revision it has seen: every answer given must be the
    state at that revision, whatever commits meanwhile; the others are refused (501)."""
    import threading
    writer = Admin(srv, srv.token("root-admin", admin=True))
    reader = Admin(srv, srv.token("root-admin", admin=True))
    acct, user = "race-" + uuid.uuid4().hex[:8], "u"
    tup = ("account:" + acct, "member", "user:" + user)
    state, lock, done = {}, threading.Lock(), threading.Event()
    state[writer.remove(tup).json()["writtenAt"]["token"]] = False

    def flip():
        try:
            for i in range(150):
                r = writer.touch(tup) if i % 2 == 0 else writer.remove(tup)
                with lock:
                    state[r.json()["writtenAt"]["token"]] = i % 2 == 0
        finally:
            done.set()

    t = threading.Thread(target=flip)
    t.start()
    answered = refused_n = 0
    try:
        while not done.is_set() or answered == 0:
            with lock:
                tok = max(state, key=int)
                want = state[tok]
            r = reader.post("/v1/permissions/check", json={
                "consistency": {"atExactSnapshot": {"token": tok}}, "resource": obj(tup[0]),
                "permission": "member", "subject": subj(tup[2])})
            if r.status_code == 400:
                refused(r, 400, 11, "revision has expired", "atExactSnapshot")
                refused_n += 1
                continue
            assert r.status_code == 200, r.text
            assert r.json()["checkedAt"]["token"] == tok, r.text
            got = r.json()["permissionship"] == "PERMISSIONSHIP_HAS_PERMISSION"
            assert got is want, ("answer at revision %s is not that revision's state" % tok, r.text)
            answered += 1
    finally:
        t.join()
    assert answered > 0
