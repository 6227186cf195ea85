"""Agents: create/get/get by name/list/delete, their statuses, tenancy and the relationships
the service writes itself (agentex.zed header comment)."""
import urllib.parse

from conftest import AGENT_404, TS_RE, UUID_RE, Client


def check_agent(obj, name, account, description=None):
    assert set(obj) == {"id", "name", "description", "account_id", "created_at", "acp_url"}, obj
    assert UUID_RE.match(obj["id"]), obj["id"]
    assert TS_RE.match(obj["created_at"]), obj["created_at"]
    assert obj["name"] == name
    assert obj["account_id"] == account
    assert obj["description"] == description


def test_create_get_by_id_by_name_list_delete(tenant, admin):
    bob = tenant.user("bob")
    a = bob.create_agent("builder", "builds things")
    check_agent(a, "builder", tenant.account, "builds things")
    b = bob.create_agent("tester")
    check_agent(b, "tester", tenant.account, None)

    r = bob.get("/agents/" + a["id"])
    assert r.status_code == 200 and r.json() == a
    assert r.headers["Content-Type"].startswith("application/json")
    r = bob.get("/agents/name/builder")
    assert r.status_code == 200 and r.json() == a

    r = bob.get("/agents")
    assert r.status_code == 200
    assert [x["id"] for x in r.json()] == [a["id"], b["id"]]
    assert r.json()[0] == a

    # the relationships the service wrote in the same transaction as the row
    rels = admin.read_rels("agent", a["id"])
    got = {(x["relation"], x["subject"]["object"]["objectType"], x["subject"]["object"]["objectId"])
           for x in rels}
    assert got == {("account", "account", tenant.account), ("owner", "user", tenant.uid("bob")),
                   ("self", "agent", a["id"])}, got

    r = bob.delete("/agents/" + a["id"])
    assert r.status_code == 200, r.text
    assert r.json() == "Agent with ID %s deleted" % a["id"]
    assert bob.get("/agents/" + a["id"]).json() == AGENT_404
    assert bob.get("/agents/name/builder").status_code == 404
    assert [x["id"] for x in bob.get("/agents").json()] == [b["id"]]
    assert admin.read_rels("agent", a["id"]) == []
    # deleting twice: 404
    r = bob.delete("/agents/" + a["id"])
    assert r.status_code == 404 and r.json() == AGENT_404


def test_create_needs_selected_account(tenant):
    bob = tenant.user("bob", account=None)
    r = bob.post("/agents", json={"name": "x"})
    assert r.status_code == 400, r.text
    assert set(r.json()) >= {"detail"}
    # the header selects an account
    r = bob.post("/agents", json={"name": "x"}, headers={"x-selected-account-id": tenant.account})
    assert r.status_code == 200, r.text
    assert r.json()["account_id"] == tenant.account
    # by name without a selected account: 400
    assert bob.get("/agents/name/x").status_code == 400


def test_header_overrides_account_claim(tenant, new_tenant):
    other = new_tenant("globex")
    bob = tenant.user("bob", account=other.account)  # claim points elsewhere
    r = bob.post("/agents", json={"name": "hdr"}, headers={"x-selected-account-id": tenant.account})
    assert r.status_code == 200, r.text
    assert r.json()["account_id"] == tenant.account


def test_create_needs_create_agent(tenant, new_tenant):
    outsider = new_tenant("globex").user("bob", account=tenant.account)
    r = outsider.post("/agents", json={"name": "intruder"})
    assert r.status_code == 403, r.text
    # a user in no account at all
    nobody = tenant.user("zed")
    assert nobody.post("/agents", json={"name": "intruder"}).status_code == 403
    assert tenant.user("alice").get("/agents/name/intruder").status_code == 404


def test_duplicate_name_in_account_is_409_other_account_ok(tenant, new_tenant):
    bob = tenant.user("bob")
    a = bob.create_agent("dup")
    r = tenant.user("gina").post("/agents", json={"name": "dup"})
    assert r.status_code == 409, r.text
    other = new_tenant("globex")
    b = other.user("bob").create_agent("dup")
    assert b["account_id"] == other.account and b["id"] != a["id"]
    # state unchanged
    assert [x["id"] for x in tenant.user("alice").get("/agents").json()] == [a["id"]]


def test_account_admin_reads_updates_deletes(tenant):
    a = tenant.user("bob").create_agent("admin-managed")
    alice = tenant.user("alice")
    assert alice.get("/agents/" + a["id"]).status_code == 200
    assert [x["id"] for x in alice.get("/agents").json()] == [a["id"]]
    assert alice.create_key(a["id"], "by-admin")["agent_id"] == a["id"]  # update
    assert alice.delete("/agents/" + a["id"]).status_code == 200


def test_member_without_grant_cannot_see(tenant):
    a = tenant.user("bob").create_agent("private")
    gina = tenant.user("gina")
    assert gina.get("/agents/" + a["id"]).json() == AGENT_404
    assert gina.get("/agents").json() == []
    r = gina.delete("/agents/" + a["id"])
    assert r.status_code == 404 and r.json() == AGENT_404
    assert tenant.user("bob").get("/agents/" + a["id"]).status_code == 200


def test_viewer_delete_is_403_outsider_404(tenant, new_tenant, admin):
    a = tenant.user("bob").create_agent("shared")
    admin.touch(("agent:" + a["id"], "viewer", "user:" + tenant.uid("dave")))
    dave = tenant.user("dave")
    assert dave.get("/agents/" + a["id"]).status_code == 200
    r = dave.delete("/agents/" + a["id"])
    assert r.status_code == 403, r.text
    assert r.json().get("detail")
    # editor may update (create keys) but not delete
    admin.touch(("agent:" + a["id"], "editor", "user:" + tenant.uid("gina")))
    gina = tenant.user("gina")
    assert gina.create_key(a["id"], "g")["agent_id"] == a["id"]
    assert gina.delete("/agents/" + a["id"]).status_code == 403
    # viewer may not update
    r = dave.post("/agent_api_keys", json={"agent_id": a["id"], "name": "d"})
    assert r.status_code == 403, r.text
    outsider = new_tenant("globex").user("carol", account=tenant.account)
    r = outsider.delete("/agents/" + a["id"])
    assert r.status_code == 404 and r.json() == AGENT_404
    assert tenant.user("bob").get("/agents/" + a["id"]).status_code == 200


def test_account_member_grant_via_userset(tenant, admin):
    a = tenant.user("bob").create_agent("team-visible")
    admin.touch(("agent:" + a["id"], "viewer", "account:%s#member" % tenant.account))
    assert tenant.user("erin").get("/agents/" + a["id"]).status_code == 200
    assert tenant.user("erin").delete("/agents/" + a["id"]).status_code == 403


def test_cross_tenant_isolation(tenant, new_tenant, admin):
    bob = tenant.user("bob")
    a = bob.create_agent("secret-agent")
    k = bob.create_key(a["id"], "k")
    globex = new_tenant("globex")
    # even an explicit grant does not cross the tenant gate
    admin.touch(("agent:" + a["id"], "viewer", "user:" + globex.uid("bob")),
                ("agent_api_key:" + k["id"], "viewer", "user:" + globex.uid("bob")))
    for carol in (globex.user("bob"), globex.user("bob", account=tenant.account),
                  Client(globex.server, globex.server.token(globex.uid("bob")),
                         headers={"x-selected-account-id": tenant.account})):
        assert carol.get("/agents").json() == []
        assert carol.get("/agents/" + a["id"]).json() == AGENT_404
        r = carol.get("/agents/name/secret-agent", headers={"x-selected-account-id": tenant.account})
        assert r.status_code == 404 and r.json() == AGENT_404
        assert carol.get("/agent_api_keys?agent_id=" + a["id"]).json() == AGENT_404
        assert carol.get("/agent_api_keys/" + k["id"]).status_code == 404
        assert carol.delete("/agent_api_keys/" + k["id"]).status_code == 404
        assert carol.delete("/agents/" + a["id"]).status_code == 404
        r = carol.post("/agent_api_keys", json={"agent_id": a["id"], "name": "x"})
        assert r.status_code == 404 and r.json() == AGENT_404
    assert bob.get("/agents/" + a["id"]).status_code == 200
    assert [x["id"] for x in bob.get("/agent_api_keys?agent_id=" + a["id"]).json()] == [k["id"]]


def test_agent_list_pagination(tenant):
    bob = tenant.user("bob")
    ids = [bob.create_agent("p%d" % i)["id"] for i in range(5)]
    full = bob.get("/agents?limit=1000").json()
    assert [x["id"] for x in full] == ids
    assert [(x["created_at"], x["id"]) for x in full] == sorted((x["created_at"], x["id"]) for x in full)
    pages = [bob.get("/agents?limit=2&page_number=%d" % p).json() for p in (1, 2, 3, 4)]
    assert [[x["id"] for x in p] for p in pages] == [ids[0:2], ids[2:4], ids[4:5], []]
    assert [x["id"] for x in bob.get("/agents?limit=1").json()] == ids[:1]


def test_name_lookup_is_scoped_to_selected_account(tenant, new_tenant):
    other = new_tenant("globex")
    a = tenant.user("alice").create_agent("same")
    b = other.user("alice").create_agent("same")
    assert tenant.user("alice").get("/agents/name/same").json()["id"] == a["id"]
    assert other.user("alice").get("/agents/name/same").json()["id"] == b["id"]
    # percent-decoded path segment
    c = tenant.user("alice").create_agent("with space é")
    r = tenant.user("alice").get("/agents/name/" + urllib.parse.quote("with space é"))
    assert r.status_code == 200 and r.json()["id"] == c["id"]
