"""/v1 names and ids that do not match SpiceDB's patterns (its protos' validation rules) are
INVALID_ARGUMENT (HTTP 400) with SpiceDB's own message, before anything looks at the schema:
`validation error: <field path>: does not match regex pattern `...``, or `validation errors:`
followed by one ` - ` line per violation, in the fields' proto order (SpiceDB v1.54's answers,
checked with the real-SpiceDB oracle)."""
import pytest

from conftest import rel

TYPE = "`^([a-z][a-z0-9_]{1,61}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9]$`"
TYPE_OPT = "`^(([a-z][a-z0-9_]{1,61}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9])?$`"
REL = "`^[a-z][a-z0-9_]{1,62}[a-z0-9]$`"
REL_OPT = "`^([a-z][a-z0-9_]{1,62}[a-z0-9])?$`"
ID = "`^(([a-zA-Z0-9/_|\\-=+]{1,})|\\*)$`"
ID_OPT = "`^([a-zA-Z0-9/_|\\-=+]{1,})?$`"
SUBJ_ID_OPT = "`^(([a-zA-Z0-9/_|\\-=+]{1,})|\\*)?$`"
CAVEAT = "`^([a-zA-Z0-9_][a-zA-Z0-9/_|-]{0,127})$`"


def obj(t, i):
    return {"objectType": t, "objectId": i}


def subj(t, i, r=None):
    s = {"object": obj(t, i)}
    if r is not None:
        s["optionalRelation"] = r
    return s


def pat(field, p):
    return "%s: does not match regex pattern %s" % (field, p)


def refused(admin, route, body, *errors):
    r = admin.post(route, json=body)
    assert r.status_code == 400, (route, r.status_code, r.text)
    b = r.json()
    assert b["code"] == 3, b
    if len(errors) == 1:
        want = "validation error: " + errors[0]
    else:
        want = "validation errors:" + "".join("\n - " + e for e in errors)
    assert b["message"] == want, (b["message"], want)
    return b


def test_check_names(admin):
    ok = {"resource": obj("agent", "a1"), "permission": "read", "subject": subj("user", "u1")}
    assert admin.post("/v1/permissions/check", json=ok).status_code == 200
    refused(admin, "/v1/permissions/check", dict(ok, resource=obj("Agent", "a1")),
            pat("resource.object_type", TYPE))
    refused(admin, "/v1/permissions/check", dict(ok, resource=obj("ag", "a1")),
            pat("resource.object_type", TYPE))
    refused(admin, "/v1/permissions/check", dict(ok, permission="Read"), pat("permission", REL_OPT))
    refused(admin, "/v1/permissions/check", dict(ok, subject=subj("User", "u1")),
            pat("subject.object.object_type", TYPE))
    refused(admin, "/v1/permissions/check", dict(ok, subject=subj("user", "u1", "X")),
            pat("subject.optional_relation", REL_OPT))
    refused(admin, "/v1/permissions/check", dict(ok, resource=obj("agent", "a 1")),
            pat("resource.object_id", ID))
    refused(admin, "/v1/permissions/check", dict(ok, subject=subj("user", "u 1")),
            pat("subject.object.object_id", ID))
    refused(admin, "/v1/permissions/check", dict(ok, resource=obj("agent", "a" * 1025)),
            "resource.object_id: must be at most 1024 bytes")
    refused(admin, "/v1/permissions/check",
            {"resource": obj("Agent", "a 1"), "permission": "R", "subject": subj("U", "u 1", "X")},
            pat("resource.object_type", TYPE), pat("resource.object_id", ID), pat("permission", REL_OPT),
            pat("subject.object.object_type", TYPE), pat("subject.object.object_id", ID),
            pat("subject.optional_relation", REL_OPT))
    # a well-formed name the schema lacks stays a schema error
    r = admin.post("/v1/permissions/check", json=dict(ok, resource=obj("nosuchtype", "a1")))
    assert r.status_code == 400 and "validation error" not in r.json()["message"], r.text


def test_checkbulk_and_expand_names(admin):
    good = {"resource": obj("agent", "a1"), "permission": "read", "subject": subj("user", "u1")}
    bad = {"resource": obj("Agent", "a1"), "permission": "read", "subject": subj("user", "u1", "X")}
    refused(admin, "/v1/permissions/checkbulk", {"items": [good, bad]},
            pat("items[1].resource.object_type", TYPE), pat("items[1].subject.optional_relation", REL_OPT))
    refused(admin, "/v1/permissions/expand", {"resource": obj("agent", "a:1"), "permission": "Read"},
            pat("resource.object_id", ID), pat("permission", REL_OPT))


def test_lookup_names(admin):
    refused(admin, "/v1/permissions/resources",
            {"resourceObjectType": "Agent", "permission": "R", "subject": subj("user", "u1")},
            pat("resource_object_type", TYPE), pat("permission", REL))
    refused(admin, "/v1/permissions/subjects",
            {"resource": obj("agent", "a1"), "permission": "read", "subjectObjectType": "u",
             "optionalSubjectRelation": "Member"},
            pat("subject_object_type", TYPE), pat("optional_subject_relation", REL_OPT))


def test_relationship_names(admin):
    def write(r):
        return {"updates": [{"operation": "OPERATION_TOUCH", "relationship": r}]}
    r = rel("account:n-acct", "member", "user:n-user")
    r["relation"] = "Member"
    refused(admin, "/v1/relationships/write", write(r), pat("updates[0].relationship.relation", REL))
    r = rel("account:n-acct", "member", "user:n-user")
    r["optionalCaveat"] = {"caveatName": "no!"}
    refused(admin, "/v1/relationships/write", write(r),
            pat("updates[0].relationship.optional_caveat.caveat_name", CAVEAT))
    pre = {"operation": "OPERATION_MUST_MATCH", "filter": {"resourceType": "Account"}}
    refused(admin, "/v1/relationships/write",
            dict(write(rel("account:n-acct", "member", "user:n-user")), optionalPreconditions=[pre]),
            pat("optional_preconditions[0].filter.resource_type", TYPE_OPT))
    # nothing was written
    r = admin.post("/v1/relationships/read", json={"relationshipFilter": {"resourceType": "account",
                                                                           "optionalResourceId": "n-acct"}})
    assert r.status_code == 200 and r.text.strip() == "", r.text


def test_filter_names(admin):
    for route in ("/v1/relationships/read", "/v1/relationships/delete"):
        refused(admin, route, {"relationshipFilter": {"resourceType": "Account"}},
                pat("relationship_filter.resource_type", TYPE_OPT))
        refused(admin, route, {"relationshipFilter": {"resourceType": "account", "optionalResourceId": "*"}},
                pat("relationship_filter.optional_resource_id", ID_OPT))
        refused(admin, route, {"relationshipFilter": {"resourceType": "account",
                                                      "optionalResourceIdPrefix": "a b"}},
                pat("relationship_filter.optional_resource_id_prefix", ID_OPT))
        refused(admin, route, {"relationshipFilter": {"resourceType": "account", "optionalRelation": "M"}},
                pat("relationship_filter.optional_relation", REL_OPT))
        refused(admin, route, {"relationshipFilter": {
            "resourceType": "account", "optionalSubjectFilter": {
                "subjectType": "U", "optionalSubjectId": "a b", "optionalRelation": {"relation": "X"}}}},
            pat("relationship_filter.optional_subject_filter.subject_type", TYPE),
            pat("relationship_filter.optional_subject_filter.optional_subject_id", SUBJ_ID_OPT),
            pat("relationship_filter.optional_subject_filter.optional_relation.relation", REL_OPT))
        refused(admin, route, {"relationshipFilter": {"resourceType": "a" * 129}},
                "relationship_filter.resource_type: must be at most 128 bytes",
                pat("relationship_filter.resource_type", TYPE_OPT))


def test_import_names(admin):
    good = rel("account:imp-n-acct", "member", "user:imp-n-user")
    bad = rel("account:imp-n-acct2", "member", "user:imp-n-user")
    bad["subject"]["object"]["objectType"] = "User"
    r = admin.post("/v1/relationships/importbulk", json={"relationships": [good, bad]})
    assert r.status_code == 400, r.text
    assert r.json()["message"] == "validation error: " + pat(
        "relationships[1].subject.object.object_type", TYPE), r.text
    # one transaction: the good one is not written either
    r = admin.post("/v1/relationships/read", json={"relationshipFilter": {"resourceType": "account",
                                                                           "optionalResourceId": "imp-n-acct"}})
    assert r.status_code == 200 and r.text.strip() == "", r.text


def test_watch_and_export_names(admin):
    import json
    watch_type = "`^([a-z][a-z0-9_]{1,62}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9]$`"
    r = admin.post("/v1/watch", json={"optionalObjectTypes": ["account", "Account"]}, timeout=30)
    line = json.loads(r.text.strip().splitlines()[-1])
    assert line["error"]["code"] == 3, line
    assert line["error"]["message"] == "validation error: " + pat("optional_object_types[1]", watch_type)
    r = admin.post("/v1/watch", json={"optionalRelationshipFilters": [{"resourceType": "account",
                                                                        "optionalRelation": "X"}]},
                   timeout=30)
    line = json.loads(r.text.strip().splitlines()[-1])
    assert line["error"]["message"] == "validation error: " + pat(
        "optional_relationship_filters[0].optional_relation", REL_OPT), line
    r = admin.post("/v1/relationships/exportbulk",
                   json={"optionalRelationshipFilter": {"resourceType": "Account"}})
    body = r.json() if r.status_code != 200 else json.loads(r.text.strip().splitlines()[-1])["error"]
    assert body["code"] == 3 and body["message"] == "validation error: " + pat(
        "optional_relationship_filter.resource_type", TYPE_OPT), r.text
