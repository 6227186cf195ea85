#!/usr/bin/env bash
# bench/forward_bench.sh - the webhook relay's cost (issue 16): wrk on an upstream called
# directly, then on the same upstream through keyward's forward ingress (agent-key
# verification: keyed hash + key row + agent row; the replay table is not touched by agent
# keys), RUNS times each, over loopback on fresh SQLite databases. The upstream is a second
# keyward's GET /healthz (fast, no database), so the difference is the ingress + relay.
# Usage: bench/forward_bench.sh KEYWARD_BIN [RUNS=3] [SECONDS=10] [CONNS=32]
# Prints one line per run and the median requests/s and latency of each.
set -euo pipefail
bin=$(realpath "$1") runs=${2:-3} secs=${3:-10} conns=${4:-32}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
start() { # $1: name; env passed through; not in a subshell, so the trap sees the pid
  "$bin" serve --db "sqlite:$work/$1.db" --listen 127.0.0.1:0 >"$work/$1.listen" 2>"$work/$1.log" &
  pids+=($!)
  until grep -q '^listening on ' "$work/$1.listen" 2>/dev/null; do sleep 0.1; done
}
start upstream
up=$(sed -n 's/^listening on //p' "$work/upstream.listen")
export KEYWARD_FORWARD_ALLOW=127.0.0.1/32 KEYWARD_FORWARD_MAX_INFLIGHT=1024
start ingress
url=$(sed -n 's/^listening on //p' "$work/ingress.listen")
admin=$("$bin" token --db "sqlite:$work/ingress.db" --sub ops --admin)
alice=$("$bin" token --db "sqlite:$work/ingress.db" --sub alice --account acme)
curl -sf "$url/v1/relationships/write" -H "Authorization: Bearer $admin" -d '{"updates": [
  {"operation": "OPERATION_TOUCH", "relationship": {
   "resource": {"objectType": "account", "objectId": "acme"}, "relation": "admin",
   "subject": {"object": {"objectType": "user", "objectId": "alice"}}}}]}' >/dev/null
agent=$(curl -sf "$url/agents" -H "Authorization: Bearer $alice" \
  -d "{\"name\": \"bench\", \"acp_url\": \"$up\"}" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
key=$(curl -sf "$url/agent_api_keys" -H "Authorization: Bearer $alice" \
  -d "{\"agent_id\": \"$agent\", \"name\": \"k\"}" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for mode in direct relayed; do
  : >"$work/$mode.rps"
  : >"$work/$mode.lat"
  for i in $(seq "$runs"); do
    if [ "$mode" = direct ]; then
      out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency "$up/healthz")
    else
      out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency -H "X-Agent-API-Key: $key" \
        "$url/agents/forward/name/bench/healthz")
    fi
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    lat=$(echo "$out" | awk '/^ +50%/ {print $2}')
    p99=$(echo "$out" | awk '/^ +99%/ {print $2}')
    errs=$(echo "$out" | grep -E 'Non-2xx|Socket errors' | tr '\n' ' ' || true)
    echo "$mode run $i: $rps req/s, p50 $lat, p99 $p99 $errs"
    echo "$rps" >>"$work/$mode.rps"
  done
  echo "$mode median: $(median <"$work/$mode.rps") req/s"
done
echo "single client, sequential (added latency per request):"
for mode in direct relayed; do
  if [ "$mode" = direct ]; then
    out=$(wrk -t1 -c1 -d"${secs}s" --latency "$up/healthz")
  else
    out=$(wrk -t1 -c1 -d"${secs}s" --latency -H "X-Agent-API-Key: $key" \
      "$url/agents/forward/name/bench/healthz")
  fi
  echo "$mode c=1: $(echo "$out" | awk '/Requests\/sec/ {print $2}') req/s, p50 $(echo "$out" |
    awk '/^ +50%/ {print $2}'), p99 $(echo "$out" | awk '/^ +99%/ {print $2}')"
done
