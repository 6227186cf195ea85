"""Listing across the route's internal batches (docs/BENCHMARKS.md, "Listing an agent's keys").

The list route walks an agent's keys in (created_at, id) order in batches (the first one
skip + limit rows, then 256) and keeps the readable ones; these tests make an agent with more
keys than two batches and check every page of every limit against the expected filtered list:
pagination after the filter, nothing lost or repeated at batch boundaries.
"""

N_KEYS = 600  # > 2 x 256: the walk crosses two batch boundaries


def _pages(client, agent_id, limit):
    out, page = [], 1
    while True:
        r = client.get("/agent_api_keys?agent_id=%s&limit=%d&page_number=%d" % (agent_id, limit, page))
        assert r.status_code == 200, r.text
        got = [k["id"] for k in r.json()]
        assert len(got) <= limit
        if not got:
            return out, page
        out.append(got)
        page += 1


def test_list_pages_across_batches(tenant, admin):
    bob = tenant.user("bob")
    a = bob.create_agent("batches")
    keys = [bob.create_key(a["id"], "b%03d" % i)["id"] for i in range(N_KEYS)]
    # the owner reads all of them, in creation order (= (created_at, id) order here)
    r = bob.get("/agent_api_keys?agent_id=%s&limit=1000" % a["id"])
    assert [k["id"] for k in r.json()] == keys
    # dave reads the agent and every 7th key from the 4th on (sparse: 86 of 600)
    readable = [k for i, k in enumerate(keys) if i % 7 == 3]
    triples = [("agent:" + a["id"], "viewer", "user:" + tenant.uid("dave"))]
    triples += [("agent_api_key:" + k, "viewer", "user:" + tenant.uid("dave")) for k in readable]
    assert admin.touch(*triples).status_code == 200
    dave = tenant.user("dave")
    for limit in (1, 7, 50, 86, 1000):
        pages, last = _pages(dave, a["id"], limit)
        assert [k for p in pages for k in p] == readable, limit
        assert all(len(p) == limit for p in pages[:-1]), limit
        assert last == -(-len(readable) // limit) + 1
    # dense: the owner's pages are the plain slices of the list
    for limit in (50, 256, 257):
        pages, _ = _pages(bob, a["id"], limit)
        assert pages == [keys[i:i + limit] for i in range(0, N_KEYS, limit)], limit
