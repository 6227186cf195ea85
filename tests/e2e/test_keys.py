"""The six agent_api_keys routes, generated secrets, pagination after the authorization filter,
the two-factor delete and atomic cleanup."""
import urllib.parse

from conftest import (AGENT_404, KEY_404, KEY_RE, TS_RE, UNAUTH, UUID_RE, agent_key_client)

TYPES = ("internal", "external", "github", "slack")


def check_key(obj, agent_id, name, typ, with_secret):
    want = {"id", "agent_id", "created_at", "name", "api_key_type", "expires_at",
            "last_used_at"} | ({"api_key"} if with_secret else set())
    assert set(obj) == want, obj
    assert obj["expires_at"] is None  # issue 14: null unless asked for at create
    assert UUID_RE.match(obj["id"])
    assert TS_RE.match(obj["created_at"]), obj["created_at"]
    assert obj["agent_id"] == agent_id and obj["name"] == name and obj["api_key_type"] == typ


def test_create_every_type_generated_secret_never_read_back(tenant, admin):
    bob = tenant.user("bob")
    a = bob.create_agent("keys")
    made = {}
    for t in TYPES:
        k = bob.create_key(a["id"], "k-" + t, api_key_type=t)
        check_key(k, a["id"], "k-" + t, t, True)
        assert KEY_RE.match(k["api_key"]), k["api_key"]
        made[t] = k
    d = bob.create_key(a["id"], "k-default")
    check_key(d, a["id"], "k-default", "external", True)
    assert KEY_RE.match(d["api_key"])
    secrets_ = {k["api_key"] for k in list(made.values()) + [d]}
    assert len(secrets_) == 5

    for k in list(made.values()) + [d]:
        r = bob.get("/agent_api_keys/" + k["id"])
        assert r.status_code == 200
        check_key(r.json(), a["id"], k["name"], k["api_key_type"], False)
        assert r.json()["created_at"] == k["created_at"]
        assert k["api_key"] not in r.text
    r = bob.get("/agent_api_keys?agent_id=" + a["id"])
    assert r.status_code == 200
    lst = r.json()
    assert [x["id"] for x in lst] == [made[t]["id"] for t in TYPES] + [d["id"]]
    for x in lst:
        assert "api_key" not in x
    for s in secrets_:
        assert s not in r.text

    # relationships written with the row (agentex.zed header)
    k = made["internal"]
    got = {(x["relation"], x["subject"]["object"]["objectType"], x["subject"]["object"]["objectId"])
           for x in admin.read_rels("agent_api_key", k["id"])}
    assert got == {("parent_agent", "agent", a["id"]), ("account", "account", tenant.account),
                   ("owner", "user", tenant.uid("bob"))}, got


def test_create_by_agent_name_and_list_by_agent_name(tenant):
    bob = tenant.user("bob")
    a = bob.create_agent("named")
    r = bob.post("/agent_api_keys", json={"agent_name": "named", "name": "n1"})
    assert r.status_code == 200, r.text
    assert r.json()["agent_id"] == a["id"]
    r = bob.get("/agent_api_keys?agent_name=named")
    assert r.status_code == 200 and [x["name"] for x in r.json()] == ["n1"]
    # agent_name without a selected account: 400
    nosel = tenant.user("bob", account=None)
    assert nosel.post("/agent_api_keys", json={"agent_name": "named", "name": "n2"}).status_code == 400
    assert nosel.get("/agent_api_keys?agent_name=named").status_code == 400
    # unknown agent name: agent 404
    r = bob.post("/agent_api_keys", json={"agent_name": "nope", "name": "n2"})
    assert r.status_code == 404 and r.json() == AGENT_404
    assert bob.get("/agent_api_keys?agent_name=nope").json() == AGENT_404


def test_exactly_one_of_agent_id_agent_name(tenant):
    bob = tenant.user("bob")
    a = bob.create_agent("one-of")
    for body in ({"name": "x"}, {"agent_id": a["id"], "agent_name": "one-of", "name": "x"}):
        r = bob.post("/agent_api_keys", json=body)
        assert r.status_code == 400, (body, r.text)
    for q in ("", "?agent_id=%s&agent_name=one-of" % a["id"]):
        assert bob.get("/agent_api_keys" + q).status_code == 400, q
        assert bob.get("/agent_api_keys/name/x" + q).status_code == 400, q
        assert bob.delete("/agent_api_keys/name/x" + q).status_code == 400, q
    assert bob.get("/agent_api_keys?agent_id=" + a["id"]).json() == []


def test_duplicate_key_409_per_agent_name_type(tenant):
    bob = tenant.user("bob")
    a = bob.create_agent("dupkeys")
    b = bob.create_agent("dupkeys2")
    k = bob.create_key(a["id"], "ci")
    r = bob.post("/agent_api_keys", json={"agent_id": a["id"], "name": "ci"})
    assert r.status_code == 409, r.text
    r = bob.post("/agent_api_keys", json={"agent_id": a["id"], "name": "ci", "api_key_type": "external"})
    assert r.status_code == 409, r.text
    assert bob.create_key(a["id"], "ci", api_key_type="internal")["api_key_type"] == "internal"
    assert bob.create_key(b["id"], "ci")["agent_id"] == b["id"]
    names = [(x["name"], x["api_key_type"]) for x in bob.get("/agent_api_keys?agent_id=" + a["id"]).json()]
    assert names == [("ci", "external"), ("ci", "internal")]
    assert bob.get("/agent_api_keys/" + k["id"]).status_code == 200


def test_by_name_routes_and_slash_in_key_name(tenant):
    bob = tenant.user("bob")
    a = bob.create_agent("byname")
    ext = bob.create_key(a["id"], "team/ci")
    itn = bob.create_key(a["id"], "team/ci", api_key_type="internal")
    q = "?agent_id=" + a["id"]
    r = bob.get("/agent_api_keys/name/team%2Fci" + q)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == ext["id"] and "api_key" not in r.json()  # default type: external
    r = bob.get("/agent_api_keys/name/team%2Fci" + q + "&api_key_type=internal")
    assert r.json()["id"] == itn["id"]
    r = bob.get("/agent_api_keys/name/team%2Fci?agent_name=byname&api_key_type=internal")
    assert r.json()["id"] == itn["id"]
    r = bob.get("/agent_api_keys/name/team%2Fci" + q + "&api_key_type=github")
    assert r.status_code == 404 and r.json() == KEY_404
    r = bob.get("/agent_api_keys/name/nope" + q)
    assert r.status_code == 404 and r.json() == KEY_404

    r = bob.delete("/agent_api_keys/name/team%2Fci" + q + "&api_key_type=internal")
    assert r.status_code == 200, r.text
    assert r.json() == "Agent api_key 'team/ci' deleted"
    assert bob.get("/agent_api_keys/" + itn["id"]).json() == KEY_404
    assert bob.get("/agent_api_keys/" + ext["id"]).status_code == 200
    r = bob.delete("/agent_api_keys/name/team%2Fci?agent_name=byname")
    assert r.status_code == 200 and r.json() == "Agent api_key 'team/ci' deleted"
    assert bob.get("/agent_api_keys" + q).json() == []
    r = bob.delete("/agent_api_keys/name/team%2Fci" + q)
    assert r.status_code == 404 and r.json() == KEY_404


def test_delete_by_id_message(tenant):
    bob = tenant.user("bob")
    a = bob.create_agent("delid")
    k = bob.create_key(a["id"], "d")
    r = bob.delete("/agent_api_keys/" + k["id"])
    assert r.status_code == 200
    assert r.json() == "Agent API key with ID %s deleted" % k["id"]
    assert bob.get("/agent_api_keys/" + k["id"]).json() == KEY_404


def test_pagination_after_filter(tenant, admin):
    bob = tenant.user("bob")
    a = bob.create_agent("paged")
    keys = [bob.create_key(a["id"], "k%d" % i) for i in range(1, 8)]
    order = sorted(keys, key=lambda k: (k["created_at"], k["id"]))
    assert [k["id"] for k in order] == [k["id"] for k in keys]
    admin.touch(("agent:" + a["id"], "viewer", "user:" + tenant.uid("dave")),
                ("agent:" + a["id"], "viewer", "user:" + tenant.uid("erin")),
                *[("agent_api_key:" + keys[i]["id"], "viewer", "user:" + tenant.uid("dave"))
                  for i in (0, 2, 4, 6)])
    dave = tenant.user("dave")
    base = "/agent_api_keys?agent_id=%s&limit=2" % a["id"]
    pages = []
    for p in (1, 2, 3):
        r = dave.get(base + "&page_number=%d" % p)
        assert r.status_code == 200, r.text
        pages.append([x["name"] for x in r.json()])
    assert pages == [["k1", "k3"], ["k5", "k7"], []]
    assert dave.get(base).json() == dave.get(base + "&page_number=1").json()
    r = dave.get("/agent_api_keys?agent_id=%s&limit=3&page_number=2" % a["id"])
    assert [x["name"] for x in r.json()] == ["k7"]
    # the owner of the agent reads all seven (parent_agent->update), in order
    r = bob.get("/agent_api_keys?agent_id=%s&limit=1000" % a["id"])
    assert [x["id"] for x in r.json()] == [k["id"] for k in keys]
    r = bob.get("/agent_api_keys?agent_id=%s&limit=3&page_number=3" % a["id"])
    assert [x["name"] for x in r.json()] == ["k7"]
    # an empty readable set is [] on every page, never an unfiltered list
    erin = tenant.user("erin")
    for p in (1, 2):
        r = erin.get("/agent_api_keys?agent_id=%s&limit=2&page_number=%d" % (a["id"], p))
        assert r.status_code == 200 and r.json() == [], r.text


def test_two_factor_delete(tenant, admin):
    bob = tenant.user("bob")
    a = bob.create_agent("twofactor")
    ag = "agent:" + a["id"]
    gina_id = "user:" + tenant.uid("gina")
    admin.touch((ag, "editor", gina_id))
    gina = tenant.user("gina")
    k1 = gina.create_key(a["id"], "g1")
    k2 = gina.create_key(a["id"], "g2")
    # gina loses update on the agent but keeps read: she can read her key, not delete it -> 403
    admin.touch((ag, "viewer", gina_id))
    admin.remove((ag, "editor", gina_id))
    assert gina.get("/agent_api_keys/" + k1["id"]).status_code == 200
    r = gina.delete("/agent_api_keys/" + k1["id"])
    assert r.status_code == 403, r.text
    r = gina.delete("/agent_api_keys/name/g1?agent_id=" + a["id"])
    assert r.status_code == 403, r.text
    # gina loses read on the agent too: key 404 (unreadable), agent 404 on by-name routes
    admin.remove((ag, "viewer", gina_id))
    r = gina.delete("/agent_api_keys/" + k2["id"])
    assert r.status_code == 404 and r.json() == KEY_404
    r = gina.delete("/agent_api_keys/name/g2?agent_id=" + a["id"])
    assert r.status_code == 404 and r.json() == AGENT_404
    # both keys still exist; the agent owner (not key owner) cannot delete them either (no key grant)
    for k in (k1, k2):
        assert bob.get("/agent_api_keys/" + k["id"]).status_code == 200
        assert bob.delete("/agent_api_keys/" + k["id"]).status_code == 403
    # the account admin cannot delete a key without a grant on it (validation: k#delete@alice false)
    assert tenant.user("alice").delete("/agent_api_keys/" + k1["id"]).status_code == 403
    # key owner who regains update can delete
    admin.touch((ag, "editor", gina_id))
    assert gina.delete("/agent_api_keys/" + k1["id"]).status_code == 200


def test_key_viewer_delete_403_outsider_404(tenant, new_tenant, admin):
    bob = tenant.user("bob")
    a = bob.create_agent("kview")
    k = bob.create_key(a["id"], "k")
    admin.touch(("agent:" + a["id"], "viewer", "user:" + tenant.uid("dave")),
                ("agent_api_key:" + k["id"], "viewer", "user:" + tenant.uid("dave")))
    dave = tenant.user("dave")
    assert dave.get("/agent_api_keys/" + k["id"]).status_code == 200
    r = dave.delete("/agent_api_keys/" + k["id"])
    assert r.status_code == 403, r.text
    carol = new_tenant("globex").user("carol", account=tenant.account)
    r = carol.delete("/agent_api_keys/" + k["id"])
    assert r.status_code == 404 and r.json() == KEY_404
    assert bob.get("/agent_api_keys/" + k["id"]).status_code == 200


def test_delete_key_cleans_up_and_stops_auth_at_once(tenant, admin):
    bob = tenant.user("bob")
    a = bob.create_agent("cleanup")
    k = bob.create_key(a["id"], "ik", api_key_type="internal")
    agent = agent_key_client(tenant.server, k["api_key"])
    assert agent.get("/agents/" + a["id"]).status_code == 200
    assert admin.read_rels("agent_api_key", k["id"]) != []
    assert bob.delete("/agent_api_keys/" + k["id"]).status_code == 200
    assert admin.read_rels("agent_api_key", k["id"]) == []
    r = agent.get("/agents/" + a["id"])
    assert r.status_code == 401 and r.json() == UNAUTH


def test_delete_agent_removes_keys_and_their_relationships(tenant, admin):
    bob = tenant.user("bob")
    a = bob.create_agent("doomed")
    keys = [bob.create_key(a["id"], "k" + t, api_key_type=t) for t in TYPES]
    admin.touch(("agent_api_key:" + keys[0]["id"], "viewer", "user:" + tenant.uid("dave")),
                ("agent:" + a["id"], "viewer", "user:" + tenant.uid("dave")))
    # a relationship elsewhere whose SUBJECT is the agent goes too (agentex.zed: "or subject")
    survivor = bob.create_agent("survivor")
    admin.touch(("agent:" + survivor["id"], "self", "agent:" + a["id"]))
    internal = agent_key_client(tenant.server, keys[0]["api_key"])
    assert internal.get("/agents/" + a["id"]).status_code == 200
    assert bob.delete("/agents/" + a["id"]).status_code == 200
    left = {(x["relation"], x["subject"]["object"]["objectId"]) for x in admin.read_rels("agent", survivor["id"])}
    assert left == {("account", tenant.account), ("owner", tenant.uid("bob")), ("self", survivor["id"])}, left
    assert admin.read_rels("agent", a["id"]) == []
    assert admin.read_rels("agent_api_key", subject="agent:" + a["id"]) == []
    assert admin.read_rels("agent", subject="agent:" + a["id"]) == []
    for k in keys:
        assert admin.read_rels("agent_api_key", k["id"]) == []
        assert bob.get("/agent_api_keys/" + k["id"]).json() == KEY_404
    assert internal.get("/agents/" + a["id"]).status_code == 401
    assert bob.get("/agent_api_keys?agent_id=" + a["id"]).json() == AGENT_404
    # a new agent with the same name starts empty
    b = bob.create_agent("doomed")
    assert bob.get("/agent_api_keys?agent_id=" + b["id"]).json() == []


def test_supplied_api_key_rules(tenant):
    bob = tenant.user("bob")
    a = bob.create_agent("supplied")
    ok16 = "A" * 15 + "~"
    ok512 = "!" + "z" * 511
    k = bob.create_key(a["id"], "s16", api_key_type="internal", api_key=ok16)
    assert k["api_key"] == ok16
    assert agent_key_client(tenant.server, ok16).get("/agents/" + a["id"]).status_code == 200
    assert bob.create_key(a["id"], "s512", api_key=ok512)["api_key"] == ok512
    bad = ["A" * 15, "z" * 513, "has space inside!!", "tab\there-is-long", "é" * 20,
           "abcdefghijklmnop\x7f", "", 12345678901234567890, ["abcdefghijklmnopq"]]
    for i, v in enumerate(bad):
        r = bob.post("/agent_api_keys", json={"agent_id": a["id"], "name": "bad%d" % i, "api_key": v})
        assert r.status_code == 422, (v, r.status_code, r.text)
    names = [x["name"] for x in bob.get("/agent_api_keys?agent_id=" + a["id"]).json()]
    assert names == ["s16", "s512"]


def test_key_names_unicode_and_lengths(tenant):
    bob = tenant.user("bob")
    a = bob.create_agent("kn")
    n255 = "é" * 255
    k = bob.create_key(a["id"], n255)
    assert k["name"] == n255
    r = bob.get("/agent_api_keys/name/" + urllib.parse.quote(n255) + "?agent_id=" + a["id"])
    assert r.status_code == 200 and r.json()["id"] == k["id"]
    r = bob.post("/agent_api_keys", json={"agent_id": a["id"], "name": "é" * 256})
    assert r.status_code == 422, r.text
    assert [x["id"] for x in bob.get("/agent_api_keys?agent_id=" + a["id"]).json()] == [k["id"]]
