#!/usr/bin/env bash
# bench/svc_bench.sh - wrk against `keyward serve` on the agents-1M SQLite dataset.
#
#   bench/svc_bench.sh [BUILD_DIR]        (default: build-svcbench, a Release build)
#   env: RUNS=3 DURATION=30s CONNS=64 THREADS=2 TESTS="get list post"
#
# 1. Builds keyward and svc_dataset; builds bench/out/agents-1m.db once (cached).
# 2. Per run: copies the pristine database (POST runs add keys), starts `keyward serve`
#    on 127.0.0.1:0 and waits for its "listening on" line, mints one bearer token per
#    sampled agent owner with `keyward token --db`, then runs wrk --latency with
#    bench/svc_wrk.lua: get (GET /agent_api_keys/{id} of a random key of the sampled
#    agents, with its owner's token), list (GET /agent_api_keys?agent_id=..&limit=50, a
#    random sampled agent, its owner's token), post (POST /agent_api_keys, unique names).
#    The server's RSS (VmRSS, VmHWM) is read after each wrk run.
# 3. Writes every run as a JSON line to bench/out/svc_results.jsonl and prints medians.
# Loopback only; wrk and the server share the machine's cores.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-svcbench}
RUNS=${RUNS:-3}
DURATION=${DURATION:-30s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
TESTS=${TESTS:-"get list post"}
OUT=$ROOT/bench/out
DB=$OUT/agents-1m.db
RUNDB=$OUT/run.db
RESULTS=$OUT/svc_results.jsonl
mkdir -p "$OUT"

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j2 --target keyward svc_dataset >/dev/null
KW=$BUILD/keyward

if [ ! -f "$DB" ] || [ ! -f "$OUT/svc_keys.tsv" ]; then
    rm -f "$DB" "$DB-wal" "$DB-shm"
    echo "building the dataset ..." >&2
    "$BUILD/svc_dataset" "$DB" "$OUT" | tee "$OUT/svc_dataset.json"
fi

SERVER_PID=
stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}
trap stop_server EXIT

start_server() {
    rm -f "$RUNDB" "$RUNDB-wal" "$RUNDB-shm"
    cp "$DB" "$RUNDB"
    local t0=$(date +%s.%N)
    "$KW" serve --db "sqlite:$RUNDB" --listen 127.0.0.1:0 \
        >"$OUT/serve.out" 2>"$OUT/serve.err" &
    SERVER_PID=$!
    for _ in $(seq 1 600); do
        if grep -q '^listening on ' "$OUT/serve.out"; then break; fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "keyward serve exited:" >&2
            cat "$OUT/serve.err" >&2
            exit 1
        fi
        sleep 0.1
    done
    URL=$(sed -n 's/^listening on //p' "$OUT/serve.out")
    [ -n "$URL" ] || { echo "no listening line" >&2; exit 1; }
    STARTUP_S=$(echo "$(date +%s.%N) - $t0" | bc)
    echo "server $SERVER_PID at $URL (start ${STARTUP_S}s, RSS $(rss_kib) KiB)" >&2
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status"; }

mint_tokens() {
    # one token per distinct owner of the sampled agents, minted by `keyward token`
    declare -gA TOKEN=()
    local owner
    for owner in $(cut -f2 "$OUT/svc_agents.tsv" | sort -u); do
        TOKEN[$owner]=$("$KW" token --sub "$owner" --ttl 86400 --db "sqlite:$RUNDB")
    done
    : >"$OUT/wrk_get.txt"
    : >"$OUT/wrk_agents.txt"
    local id tok acct
    while IFS=$'\t' read -r id owner; do
        printf '%s\t%s\n' "$id" "${TOKEN[$owner]}" >>"$OUT/wrk_get.txt"
    done <"$OUT/svc_keys.tsv"
    while IFS=$'\t' read -r id owner acct; do
        printf '%s\t%s\n' "$id" "${TOKEN[$owner]}" >>"$OUT/wrk_agents.txt"
    done <"$OUT/svc_agents.tsv"
    # sanity: one GET and one list answer 200
    id=$(head -1 "$OUT/wrk_get.txt" | cut -f1)
    tok=$(head -1 "$OUT/wrk_get.txt" | cut -f2)
    curl -sf -o /dev/null -H "Authorization: Bearer $tok" "$URL/agent_api_keys/$id" ||
        { echo "sanity GET failed" >&2; exit 1; }
}

: >"$RESULTS.new"
for run in $(seq 1 "$RUNS"); do
    start_server
    mint_tokens
    for t in $TESTS; do
        file=$OUT/wrk_agents.txt
        [ "$t" = get ] && file=$OUT/wrk_get.txt
        line=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$ROOT/bench/svc_wrk.lua" \
            "$URL" -- "$t" "$file" "r$run-$$" | tee "$OUT/wrk_${t}_$run.txt" | grep '^{"requests"')
        line={\"mode\":\"$t\",${line#\{}
        line=${line%\}},\"run\":$run,\"rss_kib\":$(rss_kib),\"hwm_kib\":$(hwm_kib),\"load\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}
        echo "$line" | tee -a "$RESULTS.new"
    done
    stop_server
done
mv "$RESULTS.new" "$RESULTS"

python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
targets = {"get": "rps >= 20,000, p99 < 10 ms", "list": "rps >= 5,000", "post": "rps >= 2,000"}
print("| test | target | median req/s | p50 | p99 | non-2xx | RSS after (max) | runs (req/s) |")
print("|---|---|---|---|---|---|---|---|")
for mode in ("get", "list", "post"):
    rs = [r for r in rows if r["mode"] == mode]
    if not rs:
        continue
    med = lambda k: statistics.median(r[k] for r in rs)
    print(f"| {mode} | {targets[mode]} | {med('rps'):,.0f} | {med('p50_us')/1000:.2f} ms | "
          f"{med('p99_us')/1000:.2f} ms | {sum(r['non2xx'] + r['socket_errors'] for r in rs)} | "
          f"{max(r['rss_kib'] for r in rs)/1024:.0f} MiB | "
          f"{' / '.join(format(r['rps'], ',.0f') for r in rs)} |")
EOF
