#!/usr/bin/env bash
# bench/svc_bench.sh - wrk against `keyward serve` on the agents-1M dataset, on SQLite or on
# PostgreSQL with one or several instances over one database.
#
#   bench/svc_bench.sh [BUILD_DIR]        (default: build-svcbench, a Release build)
#   env: BACKEND=sqlite|postgres  INSTANCES=1 (postgres: 1..4)
#        RUNS=3 DURATION=30s CONNS=64 THREADS=2 TESTS="get list post"
#        postgres only: KW_PG_BENCH_URL=postgres://... (a server you run; else a local cluster
#        of scripts/pg-test-cluster.sh with state /tmp/keyward-pg-bench.state and the server's
#        durable defaults plus KW_PG_SERVER_OPTS, default "-c shared_buffers=1GB")
#
# 1. Builds keyward, svc_dataset and svc_pg_load; builds bench/out/agents-1m.db once (cached).
#    postgres: copies that file into database kw_bench_pristine once (svc_pg_load; cached
#    while the SQLite file is unchanged), so both backends serve the same rows and secrets.
# 2. Per run: a pristine copy of the data (POST runs add keys): a copy of the SQLite file, or
#    database kw_bench_run made from the kw_bench_pristine template. Starts INSTANCES
#    `keyward serve` processes on 127.0.0.1:0 and waits for each "listening on" line, mints one
#    bearer token per sampled agent owner with `keyward token --db`, then runs wrk --latency
#    with bench/svc_wrk.lua: get (GET /agent_api_keys/{id} of a random key of the sampled
#    agents, with its owner's token), list (GET /agent_api_keys?agent_id=..&limit=50, a random
#    sampled agent, its owner's token), post (POST /agent_api_keys, unique names).
#    Several instances: one wrk per instance at the same time, CONNS/INSTANCES connections and
#    THREADS/INSTANCES threads each (at least 1); the run's req/s is their sum, its p50/p99
#    the worst instance's. After each post run, the keys added are counted in the database,
#    and each instance's revision header is read to show it has every commit. With several
#    instances, bench/svc_visibility.py measures during each load test how long a key created
#    on instance 1 (2) takes to be readable on instance 2 (1) without the revision header
#    (VIS_SAMPLES=100 samples, starting 3 s into the run).
#    The servers' RSS (VmRSS, VmHWM) is read after each wrk run.
# 3. Writes every run as a JSON line to bench/out/svc_results_<backend><instances>.jsonl and
#    prints medians. Loopback only; wrk, the servers and PostgreSQL share the machine's cores.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-svcbench}
BACKEND=${BACKEND:-sqlite}
INSTANCES=${INSTANCES:-1}
RUNS=${RUNS:-3}
DURATION=${DURATION:-30s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
TESTS=${TESTS:-"get list post"}
VIS_SAMPLES=${VIS_SAMPLES:-100}
OUT=$ROOT/bench/out
DB=$OUT/agents-1m.db
RUNDB=$OUT/run.db
RESULTS=$OUT/svc_results_$BACKEND$INSTANCES.jsonl
mkdir -p "$OUT"

case "$BACKEND/$INSTANCES" in
sqlite/1 | postgres/[1-4]) ;;
sqlite/*) echo "SQLite serves one instance per file: INSTANCES must be 1" >&2; exit 2 ;;
*) echo "BACKEND must be sqlite or postgres, INSTANCES 1..4" >&2; exit 2 ;;
esac

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j2 --target keyward svc_dataset svc_pg_load >/dev/null
KW=$BUILD/keyward

if [ ! -f "$DB" ] || [ ! -f "$OUT/svc_keys.tsv" ]; then
    rm -f "$DB" "$DB-wal" "$DB-shm"
    echo "building the dataset ..." >&2
    "$BUILD/svc_dataset" "$DB" "$OUT" | tee "$OUT/svc_dataset.json"
fi

# ---- PostgreSQL: a server, and the pristine copy of the dataset ----
PG_ADMIN= PG_BASE=
if [ "$BACKEND" = postgres ]; then
    if [ -n "${KW_PG_BENCH_URL:-}" ]; then
        PG_ADMIN=$KW_PG_BENCH_URL
    else
        export KW_PG_STATE=/tmp/keyward-pg-bench.state
        export KW_PG_SERVER_OPTS=${KW_PG_SERVER_OPTS--c shared_buffers=1GB}
        PG_ADMIN=$(bash "$ROOT/scripts/pg-test-cluster.sh" start)
    fi
    PG_BASE=${PG_ADMIN%/*} # the URL without its database name
    psql_admin() { psql -qAtX -v ON_ERROR_STOP=1 "$PG_ADMIN" "$@"; }
    stamp="$PG_BASE $(stat -c %Y "$DB")"
    have=$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'kw_bench_pristine'")
    if [ "$have" != 1 ] || [ "$(cat "$OUT/pg_pristine.stamp" 2>/dev/null)" != "$stamp" ]; then
        echo "copying the dataset into PostgreSQL (kw_bench_pristine) ..." >&2
        psql_admin -c "DROP DATABASE IF EXISTS kw_bench_pristine WITH (FORCE)" \
            -c "CREATE DATABASE kw_bench_pristine"
        "$BUILD/svc_pg_load" "$DB" "$PG_BASE/kw_bench_pristine" 2>/dev/null |
            tee "$OUT/svc_pg_load.json"
        echo "$stamp" >"$OUT/pg_pristine.stamp"
    fi
    echo "PostgreSQL $(psql_admin -c 'SHOW server_version'), fsync=$(psql_admin -c 'SHOW fsync')," \
        "synchronous_commit=$(psql_admin -c 'SHOW synchronous_commit')," \
        "shared_buffers=$(psql_admin -c 'SHOW shared_buffers')" >&2
    DBURL=$PG_BASE/kw_bench_run
else
    DBURL=sqlite:$RUNDB
fi

PIDS=()
URLS=()
stop_servers() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
    URLS=()
}
trap stop_servers EXIT

fresh_data() {
    if [ "$BACKEND" = postgres ]; then
        psql_admin -c "DROP DATABASE IF EXISTS kw_bench_run WITH (FORCE)" \
            -c "CREATE DATABASE kw_bench_run TEMPLATE kw_bench_pristine"
    else
        rm -f "$RUNDB" "$RUNDB-wal" "$RUNDB-shm"
        cp "$DB" "$RUNDB"
    fi
}

start_servers() {
    fresh_data
    local i t0 url
    for i in $(seq 1 "$INSTANCES"); do
        t0=$(date +%s.%N)
        "$KW" serve --db "$DBURL" --listen 127.0.0.1:0 \
            >"$OUT/serve$i.out" 2>"$OUT/serve$i.err" &
        PIDS+=($!)
        for _ in $(seq 1 600); do
            if grep -q '^listening on ' "$OUT/serve$i.out"; then break; fi
            if ! kill -0 "${PIDS[-1]}" 2>/dev/null; then
                echo "keyward serve exited:" >&2
                cat "$OUT/serve$i.err" >&2
                exit 1
            fi
            sleep 0.1
        done
        url=$(sed -n 's/^listening on //p' "$OUT/serve$i.out")
        [ -n "$url" ] || { echo "no listening line" >&2; exit 1; }
        URLS+=("$url")
        STARTUP_S=$(echo "$(date +%s.%N) - $t0" | bc)
        echo "server ${PIDS[-1]} at $url (start ${STARTUP_S}s, RSS $(rss_kib "${PIDS[-1]}") KiB)" >&2
    done
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
max_of() { printf '%s\n' "$@" | sort -n | tail -1; }

mint_tokens() {
    # one token per distinct owner of the sampled agents, minted by `keyward token`
    declare -gA TOKEN=()
    local owner
    for owner in $(cut -f2 "$OUT/svc_agents.tsv" | sort -u); do
        TOKEN[$owner]=$("$KW" token --sub "$owner" --ttl 86400 --db "$DBURL" 2>/dev/null)
    done
    : >"$OUT/wrk_get.txt"
    : >"$OUT/wrk_agents.txt"
    local id tok acct url
    while IFS=$'\t' read -r id owner; do
        printf '%s\t%s\n' "$id" "${TOKEN[$owner]}" >>"$OUT/wrk_get.txt"
    done <"$OUT/svc_keys.tsv"
    while IFS=$'\t' read -r id owner acct; do
        printf '%s\t%s\n' "$id" "${TOKEN[$owner]}" >>"$OUT/wrk_agents.txt"
    done <"$OUT/svc_agents.tsv"
    # sanity: one GET answers 200 on every instance
    id=$(head -1 "$OUT/wrk_get.txt" | cut -f1)
    tok=$(head -1 "$OUT/wrk_get.txt" | cut -f2)
    for url in "${URLS[@]}"; do
        curl -sf -o /dev/null -H "Authorization: Bearer $tok" "$url/agent_api_keys/$id" ||
            { echo "sanity GET failed on $url" >&2; exit 1; }
    done
}

# The revision each instance reports (X-Keyward-Revision of an authenticated GET).
revisions() {
    local id tok url revs=()
    id=$(head -1 "$OUT/wrk_get.txt" | cut -f1)
    tok=$(head -1 "$OUT/wrk_get.txt" | cut -f2)
    for url in "${URLS[@]}"; do
        revs+=("$(curl -s -D - -o /dev/null -H "Authorization: Bearer $tok" \
            "$url/agent_api_keys/$id" | tr -d '\r' | sed -n 's/^[Xx]-[Kk]eyward-[Rr]evision: //p')")
    done
    local IFS=,
    echo "${revs[*]}"
}

keys_in_db() {
    if [ "$BACKEND" = postgres ]; then
        psql -qAtX "$DBURL" -c "SELECT count(*) FROM api_keys"
    else
        echo null # the server holds the file; not read concurrently here
    fi
}

# wrk_all TEST RUN: one wrk per instance, concurrently; prints one combined JSON object.
wrk_all() {
    local t=$1 run=$2 file=$OUT/wrk_agents.txt i conns threads pids=()
    [ "$t" = get ] && file=$OUT/wrk_get.txt
    conns=$((CONNS / INSTANCES)); [ "$conns" -ge 1 ] || conns=1
    threads=$((THREADS / INSTANCES)); [ "$threads" -ge 1 ] || threads=1
    for i in $(seq 1 "$INSTANCES"); do
        wrk -t"$threads" -c"$conns" -d"$DURATION" --latency -s "$ROOT/bench/svc_wrk.lua" \
            "${URLS[$((i - 1))]}" -- "$t" "$file" "r$run-i$i-$$" >"$OUT/wrk_${t}_${run}_$i.txt" &
        pids+=($!)
    done
    rm -f "$OUT/vis_${t}_$run.json"
    if [ "$INSTANCES" -gt 1 ]; then
        # a write on one instance, polled on the other, while the load runs
        (sleep 3 && /usr/bin/python3 "$ROOT/bench/svc_visibility.py" "${URLS[0]}" "${URLS[1]}" \
            "$OUT/wrk_agents.txt" "$VIS_SAMPLES" "r$run-$t-$$" >"$OUT/vis_${t}_$run.json") &
        pids+=($!)
    fi
    for i in "${pids[@]}"; do wait "$i"; done
    python3 - "$OUT" "$t" "$run" "$INSTANCES" <<'EOF'
import json, sys
out, t, run, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
parts = []
for i in range(1, n + 1):
    for line in open(f"{out}/wrk_{t}_{run}_{i}.txt"):
        if line.startswith('{"requests"'):
            parts.append(json.loads(line))
assert len(parts) == n, f"a wrk run printed no result ({len(parts)} of {n})"
c = {"requests": sum(p["requests"] for p in parts),
     "rps": round(sum(p["rps"] for p in parts)),
     "p50_us": max(p["p50_us"] for p in parts), "p90_us": max(p["p90_us"] for p in parts),
     "p99_us": max(p["p99_us"] for p in parts), "max_us": max(p["max_us"] for p in parts),
     "non2xx": sum(p["non2xx"] for p in parts),
     "socket_errors": sum(p["socket_errors"] for p in parts)}
if n > 1:
    c["per_instance_rps"] = [p["rps"] for p in parts]
    c["visibility"] = json.load(open(f"{out}/vis_{t}_{run}.json"))
print(json.dumps(c, separators=(",", ":")))
EOF
}

: >"$RESULTS.new"
for run in $(seq 1 "$RUNS"); do
    start_servers
    mint_tokens
    for t in $TESTS; do
        before=$(keys_in_db)
        line=$(wrk_all "$t" "$run")
        added=null
        [ "$t" = post ] && [ "$before" != null ] && added=$(($(keys_in_db) - before))
        rss=() hwm=()
        for p in "${PIDS[@]}"; do rss+=("$(rss_kib "$p")"); hwm+=("$(hwm_kib "$p")"); done
        line={\"mode\":\"$t\",\"backend\":\"$BACKEND\",\"instances\":$INSTANCES,${line#\{}
        line=${line%\}},\"run\":$run,\"rss_kib\":$(max_of "${rss[@]}"),\"hwm_kib\":$(max_of "${hwm[@]}")
        line=$line,\"keys_added\":$added,\"revisions\":\"$(revisions)\",\"load\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}
        echo "$line" | tee -a "$RESULTS.new"
    done
    stop_servers
done
mv "$RESULTS.new" "$RESULTS"

python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
targets = {"get": "rps >= 20,000, p99 < 10 ms", "list": "rps >= 5,000", "post": "rps >= 2,000"}
print(f"{rows[0]['backend']}, {rows[0]['instances']} instance(s):")
vis = [(r["mode"], r["visibility"]) for r in rows if "visibility" in r]
if vis:
    print("visibility on the other instance (no header), p50 / p99 / max ms, over 100 ms:")
    for mode, v in vis:
        print(f"  under {mode}: {v['p50_ms']} / {v['p99_ms']} / {v['max_ms']}, "
              f"{v['over_100ms']} of {v['samples']} (not visible within 5 s: {v['not_visible_5s']})")
print("| test | target | median req/s | p50 | p99 | non-2xx | socket errors | RSS after (max) | runs (req/s) |")
print("|---|---|---|---|---|---|---|---|---|")
for mode in ("get", "list", "post"):
    rs = [r for r in rows if r["mode"] == mode]
    if not rs:
        continue
    med = lambda k: statistics.median(r[k] for r in rs)
    print(f"| {mode} | {targets[mode]} | {med('rps'):,.0f} | {med('p50_us')/1000:.2f} ms | "
          f"{med('p99_us')/1000:.2f} ms | {sum(r['non2xx'] for r in rs)} | "
          f"{sum(r['socket_errors'] for r in rs)} | "
          f"{max(r['rss_kib'] for r in rs)/1024:.0f} MiB | "
          f"{' / '.join(format(r['rps'], ',.0f') for r in rs)} |")
EOF
