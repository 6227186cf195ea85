"""Errors and their precedence: 404/405 (route), 401, 422, 400, 404/403, 409; validation of
bodies, names, query values, sizes, encodings and headers. Every failing request changes nothing."""
import json
import time
import uuid

import pytest

from conftest import AGENT_404, KEY_404, UNAUTH, Client, mint, raw_request, snapshot


def is_error(r, status):
    assert r.status_code == status, (status, r.status_code, r.text)
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("detail"), str) and body["detail"], body
    return body


@pytest.fixture
def setup(tenant):
    bob = tenant.user("bob")
    a = bob.create_agent("err-agent")
    k = bob.create_key(a["id"], "err-key")
    return {"bob": bob, "a": a, "k": k, "before": snapshot(bob)}


def unchanged(setup):
    assert snapshot(setup["bob"]) == setup["before"]


# --- routing first, whatever the credentials


@pytest.mark.parametrize("path", ["/nope", "/agents/x/y", "/v1/nope",
                                  "/v1/relationships", "/agentsx", "/"])
def test_unknown_route_404_without_credentials(anon, srv, path):
    is_error(anon.get(path), 404)
    is_error(Client(srv, token="garbage").post(path, data="{"), 404)


def test_bare_name_segment_is_the_id_template(anon, srv):
    # "/agent_api_keys/name" matches the template /agent_api_keys/{id} (id "name"): GET is a
    # 404 (no such route/key), POST is that template's wrong method (405), before credentials.
    is_error(anon.get("/agent_api_keys/name"), 404)
    is_error(Client(srv, token="garbage").post("/agent_api_keys/name", data="{"), 405)


@pytest.mark.parametrize("method,path", [
    ("PUT", "/agents"), ("DELETE", "/agents"), ("PATCH", "/agents/%s" % uuid.uuid4()),
    ("POST", "/agents/%s" % uuid.uuid4()), ("PUT", "/agent_api_keys"),
    ("POST", "/agent_api_keys/%s" % uuid.uuid4()), ("POST", "/agent_api_keys/name/x"),
    ("POST", "/agents/name/x"), ("POST", "/healthz"), ("DELETE", "/metrics"), ("POST", "/openapi.json"),
])
def test_wrong_method_405_without_credentials(anon, srv, method, path):
    is_error(anon.req(method, path), 405)
    is_error(Client(srv, token="garbage").req(method, path, data="{"), 405)


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/relationships/write"), ("GET", "/v1/permissions/check"), ("DELETE", "/v1/schema/read"),
])
def test_v1_wrong_method_is_grpc_gateways_501(anon, srv, method, path):
    # grpc-gateway's routing answer: UNIMPLEMENTED "Method Not Allowed", before credentials
    for client, data in ((anon, None), (Client(srv, token="garbage"), "{")):
        r = client.req(method, path, data=data)
        assert r.status_code == 501, (r.status_code, r.text)
        assert r.json() == {"code": 12, "message": "Method Not Allowed", "details": [],
                            "detail": "Method Not Allowed"}


# --- authentication


def test_401_variants(srv, tenant):
    acct = tenant.account
    sub = tenant.uid("bob")
    other = "x" + srv.secret
    cases = {
        "none": {},
        "garbage bearer": {"Authorization": "Bearer not.a.jwt"},
        "bad signature": {"Authorization": "Bearer " + mint(other, sub, account=acct)},
        "expired": {"Authorization": "Bearer " + srv.token(sub, account=acct, ttl=-120)},
        "no exp": {"Authorization": "Bearer " + srv.token(sub, account=acct, exp=False)},
        "nbf future": {"Authorization": "Bearer " + srv.token(sub, account=acct, nbf=int(time.time()) + 3600)},
        "unknown principal_type": {"Authorization": "Bearer " + srv.token(sub, account=acct, principal_type="robot")},
        "alg none": {"Authorization": "Bearer " + _alg_none(sub)},
        "unknown agent key x-header": {"x-agent-api-key": "kw_" + "A" * 43},
        "unknown agent key scheme": {"Authorization": "AgentKey kw_" + "B" * 43},
        "empty bearer": {"Authorization": "Bearer "},
        "basic": {"Authorization": "Basic YWxhZGRpbjpvcGVuc2VzYW1l"},
    }
    for name, h in cases.items():
        for method, path, body in (("GET", "/agents", None), ("POST", "/agents", {"name": "x"}),
                                   ("GET", "/agents/" + str(uuid.uuid4()), None),
                                   ("POST", "/v1/relationships/read", {"relationshipFilter": {"resourceType": "agent"}})):
            r = Client(srv, headers=h).req(method, path, json=body)
            assert r.status_code == 401, (name, path, r.status_code, r.text)
            assert r.json() == UNAUTH or (path.startswith("/v1") and r.json()["detail"] == "Unauthorized"), (name, r.text)
    # nothing was created by any of them
    assert tenant.user("alice").get("/agents").json() == []
    # the good token works; service_account principal works
    assert tenant.user("bob").get("/agents").status_code == 200
    svc = Client(srv, srv.token("svc-" + sub, principal_type="service_account", account=acct))
    assert svc.get("/agents").status_code == 200
    assert svc.post("/agents", json={"name": "by-svc"}).status_code == 403  # not a member


def _alg_none(sub):
    import base64

    def enc(o):
        return base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()
    return enc({"alg": "none", "typ": "JWT"}) + "." + enc({"sub": sub, "exp": 9999999999}) + "."


# --- precedence


def test_401_before_422(anon):
    assert anon.post("/agents", data="{not json").status_code == 401
    assert anon.get("/agents?limit=0").status_code == 401
    assert anon.post("/agent_api_keys", json={"name": 5}).status_code == 401
    assert anon.post("/v1/relationships/write", data="{").status_code == 401


def test_422_before_400(tenant, setup):
    nosel = tenant.user("bob", account=None)
    is_error(nosel.post("/agents", data="{not json", headers={"Content-Type": "application/json"}), 422)
    is_error(nosel.post("/agents", json={"name": 7}), 422)
    bob = setup["bob"]
    is_error(bob.post("/agent_api_keys", json={"agent_id": setup["a"]["id"], "agent_name": "err-agent",
                                               "name": 5}), 422)
    is_error(bob.get("/agent_api_keys?limit=0"), 422)  # neither agent_id nor agent_name, and a bad limit
    unchanged(setup)


def test_400_before_404(setup):
    bob = setup["bob"]
    body = is_error(bob.post("/agent_api_keys", json={"agent_id": str(uuid.uuid4()),
                                                      "agent_name": "no-such", "name": "x"}), 400)
    assert body != AGENT_404
    is_error(bob.get("/agent_api_keys/name/x?agent_id=%s&agent_name=no-such" % uuid.uuid4()), 400)
    unchanged(setup)


def test_403_404_before_409(tenant, new_tenant, setup, admin):
    a = setup["a"]
    admin.touch(("agent:" + a["id"], "viewer", "user:" + tenant.uid("dave")))
    r = tenant.user("dave").post("/agent_api_keys", json={"agent_id": a["id"], "name": "err-key"})
    is_error(r, 403)
    r = new_tenant("globex").user("carol").post("/agent_api_keys", json={"agent_id": a["id"], "name": "err-key"})
    assert r.status_code == 404 and r.json() == AGENT_404
    r = new_tenant("globex").user("carol", account=tenant.account).post("/agents", json={"name": "err-agent"})
    is_error(r, 403)
    unchanged(setup)


# --- query values


@pytest.mark.parametrize("q", ["limit=0", "limit=1001", "limit=x", "limit=-1", "limit=", "limit=1.5",
                               "page_number=0", "page_number=-1", "page_number=x", "limit=99999999999999999999"])
def test_out_of_range_query_values(setup, q):
    bob, a = setup["bob"], setup["a"]
    is_error(bob.get("/agents?" + q), 422)
    is_error(bob.get("/agent_api_keys?agent_id=%s&%s" % (a["id"], q)), 422)


def test_query_bounds_accepted(setup):
    bob, a = setup["bob"], setup["a"]
    for q in ("limit=1", "limit=1000", "page_number=1", "page_number=1000000"):
        assert bob.get("/agents?" + q).status_code == 200, q
        assert bob.get("/agent_api_keys?agent_id=%s&%s" % (a["id"], q)).status_code == 200, q
    assert bob.get("/agents?page_number=1000000").json() == []


@pytest.mark.parametrize("q", ["api_key_type=bogus", "api_key_type="])
def test_bad_api_key_type_query(setup, q):
    bob, a = setup["bob"], setup["a"]
    is_error(bob.get("/agent_api_keys/name/err-key?agent_id=%s&%s" % (a["id"], q)), 422)
    is_error(bob.delete("/agent_api_keys/name/err-key?agent_id=%s&%s" % (a["id"], q)), 422)
    unchanged(setup)


# --- bodies


AGENT_BODIES = [b"{", b"", b"[]", b"null", b'"name"', b"{}", b'{"name": 1}', b'{"name": null}',
                b'{"name": ["a"]}', b'{"name": "ok", "description": 5}', b'{"description": "x"}',
                b'{"name": "a"} trailing', b'{"name": "\\ud800"}']


@pytest.mark.parametrize("body", AGENT_BODIES)
def test_agent_body_422(setup, body):
    is_error(setup["bob"].post("/agents", data=body, headers={"Content-Type": "application/json"}), 422)
    unchanged(setup)


def test_key_body_422(setup):
    bob, a = setup["bob"], setup["a"]
    aid = a["id"]
    bodies = [{"agent_id": aid}, {"agent_id": aid, "name": 3}, {"agent_id": 3, "name": "x"},
              {"agent_id": aid, "name": "x", "api_key_type": "bogus"},
              {"agent_id": aid, "name": "x", "api_key_type": 1},
              {"agent_id": aid, "name": "x", "api_key": 1234567890123456789},
              {"agent_name": ["err-agent"], "name": "x"}, [aid]]
    for b in bodies:
        is_error(bob.post("/agent_api_keys", json=b), 422)
    for raw in (b"{", b"", b'{"agent_id": "%s", "name": "\xff"}' % aid.encode()):
        is_error(bob.post("/agent_api_keys", data=raw, headers={"Content-Type": "application/json"}), 422)
    unchanged(setup)


def test_body_over_1mib_is_413(setup):
    bob, a = setup["bob"], setup["a"]
    big = json.dumps({"name": "big", "description": "x" * (1024 * 1024)}).encode()
    assert len(big) > 1024 * 1024
    is_error(bob.post("/agents", data=big, headers={"Content-Type": "application/json"}), 413)
    big = json.dumps({"agent_id": a["id"], "name": "big", "pad": "y" * (1024 * 1024 + 10)}).encode()
    is_error(bob.post("/agent_api_keys", data=big, headers={"Content-Type": "application/json"}), 413)
    # exactly over by one byte
    filler = 1024 * 1024 + 1 - len(b'{"name":"b","description":""}')
    body = b'{"name":"b","description":"' + b"z" * filler + b'"}'
    assert len(body) == 1024 * 1024 + 1
    is_error(bob.post("/agents", data=body, headers={"Content-Type": "application/json"}), 413)
    unchanged(setup)


INVALID_UTF8 = [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"ab\x80cd", b"\xe2\x82", b"\xf8\x88\x80\x80\x80"]


@pytest.mark.parametrize("bad", INVALID_UTF8)
def test_invalid_utf8_name_422(setup, bad):
    body = b'{"name": "x' + bad + b'y"}'
    is_error(setup["bob"].post("/agents", data=body, headers={"Content-Type": "application/json"}), 422)
    body = b'{"agent_id": "%s", "name": "k%sk"}' % (setup["a"]["id"].encode(), bad)
    is_error(setup["bob"].post("/agent_api_keys", data=body, headers={"Content-Type": "application/json"}), 422)
    unchanged(setup)


CONTROL = ["\u0000", "\u0001", "\t", "\n", "\r", "\u001f", "\u007f", "\u0080", "\u0085", "\u009f"]


@pytest.mark.parametrize("ch", CONTROL, ids=["U+%04X" % ord(c) for c in CONTROL])
def test_control_characters_in_names_422(setup, ch):
    bob, a = setup["bob"], setup["a"]
    for name in ("a" + ch + "b", ch, ch + "lead", "trail" + ch):
        is_error(bob.post("/agents", json={"name": name}), 422)
        is_error(bob.post("/agent_api_keys", json={"agent_id": a["id"], "name": name}), 422)
    unchanged(setup)


def test_name_rules(setup):
    bob, a = setup["bob"], setup["a"]
    for bad in ("", "a/b", "/", "x" * 256, "é" * 256, "\U0001F600" * 256):
        is_error(bob.post("/agents", json={"name": bad}), 422)
    for bad in ("", "x" * 256, "é" * 256, "\U0001F600" * 256):
        is_error(bob.post("/agent_api_keys", json={"agent_id": a["id"], "name": bad}), 422)
    unchanged(setup)
    # 255 code points (of 1, 2 and 4 UTF-8 bytes) are fine; U+00A0 and beyond are not control chars
    for ok in ("x" * 255, "é" * 255, "\U0001F600" * 255, "a\u00a0b", "名前"):
        r = bob.post("/agents", json={"name": ok})
        assert r.status_code == 200, (ok, r.text)
        assert r.json()["name"] == ok
        assert bob.get("/agents/" + r.json()["id"]).json()["name"] == ok
        k = bob.create_key(a["id"], ok)
        assert k["name"] == ok


# --- headers and paths


def test_overlong_header_is_rejected_and_changes_nothing(srv, setup):
    tok = setup["bob"].headers["Authorization"]
    body = b'{"name": "via-huge-header"}'
    req = (b"POST /agents HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + tok.encode() +
           b"\r\nContent-Type: application/json\r\nX-Filler: " + b"a" * (256 * 1024) +
           b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    status, _, _ = raw_request(srv, req)
    assert status is None or status in (400, 413, 431), status
    assert status != 200
    # a huge credential header too
    h = {"Authorization": "Bearer " + "a" * (200 * 1024)}
    status, _, _ = raw_request(srv, b"GET /agents HTTP/1.1\r\nHost: x\r\nAuthorization: " +
                               h["Authorization"].encode() + b"\r\nConnection: close\r\n\r\n")
    assert status is None or status in (400, 401, 413, 431), status
    assert Client(srv).get("/healthz").status_code == 200
    unchanged(setup)


def test_path_traversal_ids(srv, setup):
    bob, a, k = setup["bob"], setup["a"], setup["k"]
    r = bob.get("/agents/..%2F..%2Fhealthz")
    assert r.status_code == 404 and r.json() == AGENT_404
    r = bob.delete("/agents/..%2F..%2Fagents")
    assert r.status_code == 404 and r.json() == AGENT_404
    r = bob.delete("/agent_api_keys/..%2F..")
    assert r.status_code == 404 and r.json() == KEY_404
    r = bob.delete("/agent_api_keys/%s%%2F..%%2F%s" % (k["id"], k["id"]))
    assert r.status_code == 404 and r.json() == KEY_404
    r = bob.get("/agent_api_keys/name/..%2F..?agent_id=" + a["id"])
    assert r.status_code == 404 and r.json() == KEY_404
    r = bob.post("/agent_api_keys", json={"agent_id": "../" + a["id"], "name": "t"})
    assert r.status_code == 404 and r.json() == AGENT_404
    r = bob.get("/agent_api_keys?agent_id=..%2F" + a["id"])
    assert r.status_code == 404 and r.json() == AGENT_404
    # raw dot segments (no client normalisation): never a 200 that bypasses auth or routing
    tok = bob.headers["Authorization"].encode()
    for path in (b"/agents/../healthz", b"/agents/%2e%2e", b"/agent_api_keys/%2e%2e/%2e%2e/agents",
                 b"/healthz/../agents", b"/agents/" + k["id"].encode() + b"/..", b"/agents/%00"):
        st, _, body = raw_request(srv, b"DELETE " + path + b" HTTP/1.1\r\nHost: x\r\nAuthorization: " + tok +
                                  b"\r\nConnection: close\r\n\r\n")
        assert st in (400, 404, 405), (path, st, body)
        st, _, body = raw_request(srv, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert st in (400, 401, 404), (path, st, body)
    unchanged(setup)


def test_bad_percent_encoding_in_path_or_query(srv, setup):
    bob, a = setup["bob"], setup["a"]
    tok = bob.headers["Authorization"].encode()
    for target in (b"/agents/name/%zz", b"/agents?limit=%zz", b"/agent_api_keys/name/%E2%82?agent_id=" + a["id"].encode(),
                   b"/agents/name/%ff"):
        st, _, body = raw_request(srv, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nAuthorization: " + tok +
                                  b"\r\nx-selected-account-id: " + a["account_id"].encode() +
                                  b"\r\nConnection: close\r\n\r\n")
        assert st in (400, 404, 422), (target, st, body)
        if st != 400:
            assert json.loads(body)["detail"]
    unchanged(setup)
