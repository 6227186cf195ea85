"""Operations routes: /healthz, /readyz, /metrics, /openapi.json (no credentials needed)."""
import json
import re

from conftest import UUID_RE, Client

API_ROUTES = {
    "/agents": {"get", "post"},
    "/agents/{id}": {"get", "delete"},
    "/agents/name/{name}": {"get"},
    "/agent_api_keys": {"get", "post"},
    "/agent_api_keys/{id}": {"get", "delete"},
    "/agent_api_keys/name/{name}": {"get", "delete"},
}
V1_ROUTES = ["/v1/relationships/write", "/v1/relationships/read", "/v1/relationships/delete",
             "/v1/permissions/check", "/v1/permissions/checkbulk", "/v1/permissions/resources",
             "/v1/permissions/subjects", "/v1/permissions/expand", "/v1/schema/read",
             "/v1/schema/write"]
OPS_ROUTES = ["/healthz", "/readyz", "/metrics"]


def test_healthz_and_readyz_without_credentials(anon):
    for path in ("/healthz", "/readyz"):
        r = anon.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text)
        assert r.headers.get("X-Request-Id"), path


def test_request_ids_are_unique(anon):
    ids = {anon.get("/healthz").headers.get("X-Request-Id") for _ in range(5)}
    assert None not in ids and len(ids) == 5


def test_openapi_lists_every_route(anon):
    r = anon.get("/openapi.json")
    assert r.status_code == 200, r.text
    doc = json.loads(r.content)
    assert re.match(r"^3\.1\.\d+$", str(doc.get("openapi"))), doc.get("openapi")
    paths = doc.get("paths")
    assert isinstance(paths, dict)
    for path, methods in API_ROUTES.items():
        assert path in paths, "openapi.json lacks %s" % path
        have = {m.lower() for m in paths[path]}
        assert methods <= have, (path, methods, have)
    for path in V1_ROUTES:
        assert path in paths, "openapi.json lacks %s" % path
        assert "post" in {m.lower() for m in paths[path]}, path
    for path in OPS_ROUTES:
        assert path in paths, "openapi.json lacks %s" % path


def _metric_lines(text, name):
    return [l for l in text.splitlines() if l.startswith(name + "{") or l.startswith(name + " ")]


def test_metrics_use_route_templates(srv, tenant):
    bob = tenant.user("bob")
    a = bob.create_agent("metrics-agent")
    assert bob.get("/agents/" + a["id"]).status_code == 200
    k = bob.create_key(a["id"], "m1")
    assert bob.get("/agent_api_keys/" + k["id"]).status_code == 200
    assert bob.get("/agent_api_keys/00000000-0000-7000-8000-000000000000").status_code == 404
    r = Client(srv).get("/metrics")
    assert r.status_code == 200
    assert r.headers.get("Content-Type", "").startswith("text/plain"), r.headers.get("Content-Type")
    text = r.text
    reqs = _metric_lines(text, "keyward_http_requests_total")
    assert reqs, "no keyward_http_requests_total"
    labels = "\n".join(reqs)
    for need in ('route="/agents/{id}"', 'route="/agent_api_keys/{id}"', 'route="/agents"',
                 'method="GET"', 'method="POST"', 'status="200"', 'status="404"'):
        assert need in labels, "missing %s in:\n%s" % (need, labels)
    for line in reqs:
        m = re.search(r'route="([^"]*)"', line)
        assert m, line
        for seg in m.group(1).split("/"):
            assert not UUID_RE.match(seg), "raw path in route label: " + line
    assert a["id"] not in text and k["id"] not in text
    assert _metric_lines(text, "keyward_http_request_duration_seconds_bucket")
    assert _metric_lines(text, "keyward_http_request_duration_seconds_count")
    assert _metric_lines(text, "keyward_http_request_duration_seconds_sum")
    assert any('le="+Inf"' in l for l in _metric_lines(text, "keyward_http_request_duration_seconds_bucket"))
    checks = _metric_lines(text, "keyward_checks_total")
    assert checks and all("result=" in l for l in checks), checks
    assert _metric_lines(text, "keyward_relationships"), "no keyward_relationships gauge"
    # counters move
    before = _count(text, "/agents/{id}", "GET", "200")
    assert bob.get("/agents/" + a["id"]).status_code == 200
    after = _count(Client(srv).get("/metrics").text, "/agents/{id}", "GET", "200")
    assert after >= before + 1, (before, after)


def _count(text, route, method, status):
    total = 0.0
    for l in _metric_lines(text, "keyward_http_requests_total"):
        if ('route="%s"' % route in l and 'method="%s"' % method in l
                and 'status="%s"' % status in l):
            total += float(l.rsplit(" ", 1)[1])
    return total
