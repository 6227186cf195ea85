#!/usr/bin/env bash
# bench/http_bench.sh - the HTTP layer's throughput: wrk on GET /healthz (no auth, no
# database) and on an authenticated GET /agents/{id} (bearer JWT, one graph check, one
# row), RUNS times each, on a fresh SQLite database over loopback.
# Usage: bench/http_bench.sh KEYWARD_BIN [RUNS=3] [SECONDS=10] [CONNS=64]
# Prints one line per run and the median requests/s of each route.
set -euo pipefail
bin=$(realpath "$1") runs=${2:-3} secs=${3:-10} conns=${4:-64}
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
"$bin" serve --db "sqlite:$work/k.db" --listen 127.0.0.1:0 >"$work/listen" 2>"$work/log" &
pid=$!
until grep -q '^listening on ' "$work/listen" 2>/dev/null; do sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/listen")
admin=$("$bin" token --db "sqlite:$work/k.db" --sub ops --admin)
alice=$("$bin" token --db "sqlite:$work/k.db" --sub alice --account acme)
curl -sf "$url/v1/relationships/write" -H "Authorization: Bearer $admin" -d '{"updates": [
  {"operation": "OPERATION_TOUCH", "relationship": {
   "resource": {"objectType": "account", "objectId": "acme"}, "relation": "admin",
   "subject": {"object": {"objectType": "user", "objectId": "alice"}}}}]}' >/dev/null
agent=$(curl -sf "$url/agents" -H "Authorization: Bearer $alice" -d '{"name": "bench"}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for route in healthz agent; do
  : >"$work/$route"
  for i in $(seq "$runs"); do
    if [ "$route" = healthz ]; then
      out=$(wrk -t2 -c"$conns" -d"${secs}s" "$url/healthz")
    else
      out=$(wrk -t2 -c"$conns" -d"${secs}s" -H "Authorization: Bearer $alice" "$url/agents/$agent")
    fi
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    lat=$(echo "$out" | awk '/Latency/ {print $2}')
    errs=$(echo "$out" | grep -E 'Non-2xx|Socket errors' | tr '\n' ' ' || true)
    echo "$route run $i: $rps req/s, mean latency $lat $errs"
    echo "$rps" >>"$work/$route"
  done
  echo "$route median: $(median <"$work/$route") req/s"
done
