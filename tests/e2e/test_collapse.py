"""404 collapse: a resource the caller cannot read answers byte-for-byte like an absent one
(same status, body bytes, headers but Date/X-Request-Id); non-UUID ids are simply absent."""
import uuid

import pytest

from conftest import AGENT_404, KEY_404, same_404

NOT_UUIDS = ["not-a-uuid", "..%2F..%2Fhealthz", "12345", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
             "00000000-0000-0000-0000-00000000000"]


def absent():
    return str(uuid.uuid4())


@pytest.fixture
def world(tenant, new_tenant, admin):
    bob = tenant.user("bob")
    a = bob.create_agent("collapse-a")
    k = bob.create_key(a["id"], "kk")
    # dave may read the agent but not the key; gina (same account) nothing; carol is another tenant
    admin.touch(("agent:" + a["id"], "viewer", "user:" + tenant.uid("dave")))
    globex = new_tenant("globex")
    return {
        "a": a, "k": k, "bob": bob, "dave": tenant.user("dave"), "gina": tenant.user("gina"),
        "carol": globex.user("carol", account=tenant.account),
        "carol_own": globex.user("carol"),
    }


def _all_same(responses, body):
    first = responses[0]
    assert first.status_code == 404, (first.status_code, first.text)
    assert first.json() == body
    assert first.headers["Content-Type"].startswith("application/json")
    for r in responses[1:]:
        same_404(first, r)
    ids = [r.headers.get("X-Request-Id") for r in responses]
    assert all(ids) and len(set(ids)) == len(ids), "every response carries its own X-Request-Id"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_agent_by_id(world, method):
    a = world["a"]
    rs = []
    for who in ("gina", "carol", "carol_own"):
        c = world[who]
        rs.append(c.req(method, "/agents/" + absent()))
        rs.append(c.req(method, "/agents/" + a["id"]))
        for bad in NOT_UUIDS:
            rs.append(c.req(method, "/agents/" + bad))
    _all_same(rs, AGENT_404)
    assert world["bob"].get("/agents/" + a["id"]).status_code == 200


def test_agent_by_name(world):
    rs = []
    for who in ("gina", "carol"):
        c = world[who]
        rs += [c.get("/agents/name/no-such-agent"), c.get("/agents/name/collapse-a"),
               c.get("/agents/name/collapse-a", headers={"x-selected-account-id": "no-such-account"})]
    _all_same(rs, AGENT_404)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_key_by_id(world, method):
    k = world["k"]
    rs = []
    for who in ("gina", "dave", "carol", "carol_own"):
        c = world[who]
        rs.append(c.req(method, "/agent_api_keys/" + absent()))
        rs.append(c.req(method, "/agent_api_keys/" + k["id"]))
        for bad in NOT_UUIDS:
            rs.append(c.req(method, "/agent_api_keys/" + bad))
    _all_same(rs, KEY_404)
    assert world["bob"].get("/agent_api_keys/" + k["id"]).status_code == 200


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_key_by_name_readable_agent(world, method):
    """dave reads the agent: an unreadable key and an absent key name are the same key 404."""
    a, dave = world["a"], world["dave"]
    rs = [dave.req(method, "/agent_api_keys/name/kk?agent_id=" + a["id"]),
          dave.req(method, "/agent_api_keys/name/absent-name?agent_id=" + a["id"]),
          dave.req(method, "/agent_api_keys/name/kk?agent_name=collapse-a"),
          dave.req(method, "/agent_api_keys/name/kk?agent_id=%s&api_key_type=internal" % a["id"])]
    _all_same(rs, KEY_404)
    assert world["bob"].get("/agent_api_keys/name/kk?agent_id=" + a["id"]).status_code == 200


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_key_by_name_unreadable_agent_is_agent_404(world, method):
    a = world["a"]
    rs = []
    for who in ("gina", "carol"):
        c = world[who]
        rs += [c.req(method, "/agent_api_keys/name/kk?agent_id=" + a["id"]),
               c.req(method, "/agent_api_keys/name/kk?agent_id=" + absent()),
               c.req(method, "/agent_api_keys/name/kk?agent_id=not-a-uuid"),
               c.req(method, "/agent_api_keys/name/kk?agent_name=collapse-a"),
               c.req(method, "/agent_api_keys/name/kk?agent_name=no-such-agent")]
    _all_same(rs, AGENT_404)


def test_key_list_and_create_resolve_agent_first(world):
    a = world["a"]
    rs = []
    for who in ("gina", "carol"):
        c = world[who]
        rs += [c.get("/agent_api_keys?agent_id=" + a["id"]),
               c.get("/agent_api_keys?agent_id=" + absent()),
               c.get("/agent_api_keys?agent_id=..%2F.."),
               c.get("/agent_api_keys?agent_name=collapse-a"),
               c.post("/agent_api_keys", json={"agent_id": a["id"], "name": "x"}),
               c.post("/agent_api_keys", json={"agent_id": absent(), "name": "x"}),
               c.post("/agent_api_keys", json={"agent_id": "not-a-uuid", "name": "x"}),
               c.post("/agent_api_keys", json={"agent_name": "collapse-a", "name": "x"})]
    _all_same(rs, AGENT_404)
    assert [x["name"] for x in world["bob"].get("/agent_api_keys?agent_id=" + a["id"]).json()] == ["kk"]


def test_readable_but_forbidden_is_403_not_404(world):
    dave, a = world["dave"], world["a"]
    r = dave.delete("/agents/" + a["id"])
    assert r.status_code == 403
    assert r.json()["detail"] and r.json() != AGENT_404
    r = dave.post("/agent_api_keys", json={"agent_id": a["id"], "name": "x"})
    assert r.status_code == 403, r.text
