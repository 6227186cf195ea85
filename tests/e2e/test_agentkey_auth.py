"""Agent principals: internal/external keys authenticate as agent:<id> (x-agent-api-key or
`Authorization: AgentKey`, scheme case-insensitive); github/slack keys do not. The agent is
checked against the schema like anyone else: agent:X#read@agent:X via self, no update, and no
read on its own keys (agentex.validation.yaml: agent_api_key:k#read@agent:x is false)."""
import pytest

from conftest import AGENT_404, KEY_404, UNAUTH, agent_key_client


@pytest.fixture
def agent_world(tenant):
    bob = tenant.user("bob")
    a = bob.create_agent("self-agent")
    other = bob.create_agent("other-agent")
    keys = {t: bob.create_key(a["id"], "k-" + t, api_key_type=t) for t in ("internal", "external", "github", "slack")}
    return {"bob": bob, "a": a, "other": other, "keys": keys, "srv": tenant.server}


@pytest.mark.parametrize("typ", ["internal", "external"])
@pytest.mark.parametrize("scheme", ["x-agent-api-key", "AgentKey", "agentkey", "AGENTKEY", "aGeNtKeY"])
def test_internal_external_keys_authenticate(agent_world, typ, scheme):
    a = agent_world["a"]
    c = agent_key_client(agent_world["srv"], agent_world["keys"][typ]["api_key"], scheme)
    r = c.get("/agents/" + a["id"])
    assert r.status_code == 200, r.text
    assert r.json()["id"] == a["id"]


@pytest.mark.parametrize("typ", ["github", "slack"])
@pytest.mark.parametrize("scheme", ["x-agent-api-key", "AgentKey"])
def test_github_slack_keys_do_not_authenticate(agent_world, typ, scheme):
    c = agent_key_client(agent_world["srv"], agent_world["keys"][typ]["api_key"], scheme)
    r = c.get("/agents/" + agent_world["a"]["id"])
    assert r.status_code == 401 and r.json() == UNAUTH


def test_key_text_variants_do_not_authenticate(agent_world):
    key = agent_world["keys"]["internal"]["api_key"]
    srv = agent_world["srv"]
    for bad in (key[:-1], key + "x", key.upper(), key[:3] + key[4:], "Bearer"):
        r = agent_key_client(srv, bad).get("/agents/" + agent_world["a"]["id"])
        assert r.status_code == 401, bad
    # an agent key is not a bearer token
    r = agent_key_client(srv, key, "Bearer").get("/agents/" + agent_world["a"]["id"])
    assert r.status_code == 401


def test_what_the_agent_principal_may_do(agent_world):
    a, other, bob = agent_world["a"], agent_world["other"], agent_world["bob"]
    keys = agent_world["keys"]
    me = agent_key_client(agent_world["srv"], keys["internal"]["api_key"])
    # read itself, list shows only itself
    assert me.get("/agents/" + a["id"]).status_code == 200
    assert [x["id"] for x in me.get("/agents").json()] == [a["id"]]
    # not another agent of the same account
    r = me.get("/agents/" + other["id"])
    assert r.status_code == 404 and r.json() == AGENT_404
    # no update: cannot create keys on itself; no delete of itself (readable -> 403)
    r = me.post("/agent_api_keys", json={"agent_id": a["id"], "name": "by-agent"})
    assert r.status_code == 403, r.text
    r = me.delete("/agents/" + a["id"])
    assert r.status_code == 403, r.text
    # its own keys are not readable by it: key 404, list [] (agent readable)
    for k in keys.values():
        r = me.get("/agent_api_keys/" + k["id"])
        assert r.status_code == 404 and r.json() == KEY_404
        r = me.delete("/agent_api_keys/" + k["id"])
        assert r.status_code == 404 and r.json() == KEY_404
    r = me.get("/agent_api_keys?agent_id=" + a["id"])
    assert r.status_code == 200 and r.json() == []
    # creating an agent: no create_agent for agents
    r = me.post("/agents", json={"name": "spawn"}, headers={"x-selected-account-id": a["account_id"]})
    assert r.status_code == 403, r.text
    # no /v1 administration
    r = me.post("/v1/relationships/read", json={"relationshipFilter": {"resourceType": "agent"}})
    assert r.status_code == 403, r.text
    # nothing changed
    assert [x["name"] for x in bob.get("/agent_api_keys?agent_id=" + a["id"]).json()] == \
        ["k-internal", "k-external", "k-github", "k-slack"]
    assert bob.get("/agents/" + a["id"]).status_code == 200


def test_key_of_deleted_agent_and_bearer_precedence(agent_world):
    srv, a = agent_world["srv"], agent_world["a"]
    ext = agent_world["keys"]["external"]["api_key"]
    c = agent_key_client(srv, ext)
    assert c.get("/agents/" + a["id"]).status_code == 200
    assert agent_world["bob"].delete("/agents/" + a["id"]).status_code == 200
    assert c.get("/agents").status_code == 401
    assert agent_key_client(srv, ext, "AgentKey").get("/agents").status_code == 401
