#!/usr/bin/python3
"""bench/svc_visibility.py - how long a write on one keyward instance takes to be visible on
another, without the revision header (bench/svc_bench.sh runs it during the load tests when
INSTANCES > 1).

    svc_visibility.py URL_A URL_B AGENTS_FILE SAMPLES TAG

AGENTS_FILE lines: agent_id TAB bearer token (the owner's). Each sample: POST a key on A
(a random sampled agent, its owner's token), then GET it on B every 0.5 ms until B answers
200 (B answers 404 until its follower has applied A's commit). The delay is measured from
A's response (the commit is durable and acknowledged) to B's first 200. Alternates A->B and
B->A. Prints one JSON line: samples, p50/p90/p99/max in ms, and how many exceeded 100 ms.
A sample that is not visible after 5 s counts as 5,000 ms and is reported as a failure.
"""
import json
import random
import sys
import time

import requests


def main():
    url_a, url_b, agents_file, samples, tag = sys.argv[1:6]
    rows = [l.rstrip("\n").split("\t") for l in open(agents_file) if "\t" in l]
    delays, lost = [], 0
    sa, sb = requests.Session(), requests.Session()
    for i in range(int(samples)):
        (src, s_src), (dst, s_dst) = ((url_a, sa), (url_b, sb)) if i % 2 == 0 else \
            ((url_b, sb), (url_a, sa))
        agent, tok = random.choice(rows)
        hdr = {"Authorization": "Bearer " + tok}
        r = s_src.post(src + "/agent_api_keys", headers=hdr, json={
            "agent_id": agent, "name": "vis-%s-%d" % (tag, i), "api_key_type": "external"})
        if r.status_code != 200:
            print("create failed: %d %s" % (r.status_code, r.text[:200]), file=sys.stderr)
            sys.exit(1)
        t0 = time.monotonic()
        key = r.json()["id"]
        while True:
            g = s_dst.get(dst + "/agent_api_keys/" + key, headers=hdr)
            if g.status_code == 200:
                delays.append((time.monotonic() - t0) * 1000)
                break
            if g.status_code != 404:
                print("unexpected %d on the other instance: %s" % (g.status_code, g.text[:200]),
                      file=sys.stderr)
            if time.monotonic() - t0 > 5:
                delays.append(5000.0)
                lost += 1
                break
            time.sleep(0.0005)
        time.sleep(0.02)
    d = sorted(delays)
    pct = lambda p: d[min(len(d) - 1, int(p / 100 * len(d)))]
    print(json.dumps({"samples": len(d), "p50_ms": round(pct(50), 2), "p90_ms": round(pct(90), 2),
                      "p99_ms": round(pct(99), 2), "max_ms": round(d[-1], 2),
                      "over_100ms": sum(1 for x in d if x > 100), "not_visible_5s": lost}))


if __name__ == "__main__":
    main()
