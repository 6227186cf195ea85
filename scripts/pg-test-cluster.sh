#!/usr/bin/env bash
# scripts/pg-test-cluster.sh start|stop|url|status - a throwaway PostgreSQL cluster for tests.
#
# start  initdb a fresh cluster in a mktemp dir, listen on 127.0.0.1 on a free port (trust
#        auth, no unix socket outside the data dir), wait until it answers, print its URL.
#        If the cluster of this state file is already running, just print its URL.
# stop   stop the cluster fast and remove its directory and the state file (no error when
#        nothing runs).
# url    print the URL of the running cluster (exit 1 when none).
# status exit 0 when the cluster answers.
# down   stop the server but keep the data (outage tests), `up` starts it again on the
#        same port.
#
# As root the server runs as the `postgres` system user (PostgreSQL refuses to run as root);
# otherwise as the calling user. State (data dir, port) lives in $KW_PG_STATE (default
# /tmp/keyward-pg-test.state), so several clusters can coexist with different state files.
# KW_PG_SERVER_OPTS replaces the durability shortcuts (fsync off) for measurements:
# KW_PG_SERVER_OPTS= (empty) runs with the server defaults.
# PostgreSQL binaries: $KW_PG_BIN, else the newest /usr/lib/postgresql/*/bin, else PATH.
set -euo pipefail

state=${KW_PG_STATE:-/tmp/keyward-pg-test.state}

pg_bin() {
    if [ -n "${KW_PG_BIN:-}" ]; then echo "$KW_PG_BIN"; return; fi
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return; fi
    d=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
    if [ -x "$d/initdb" ]; then echo "$d"; return; fi
    echo "pg-test-cluster: PostgreSQL server binaries not found (apt-get install postgresql)" >&2
    exit 2
}

# Runs a command as the cluster's owner.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

load_state() {
    dir= port=
    [ -f "$state" ] || return 1
    # shellcheck disable=SC1090
    . "$state"
    [ -n "$dir" ] && [ -n "$port" ]
}

url_of() { echo "postgres://postgres@127.0.0.1:$1/postgres"; }

is_up() {
    as_owner "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2 >/dev/null 2>&1
}

server_start() {
    local bin; bin=$(pg_bin)
    # -k: the unix socket stays inside the data dir. fsync off: throwaway data, and an
    # immediate stop (the outage test) is a process crash, which fsync does not matter for;
    # synchronous_commit stays on, or an immediate stop would lose acknowledged commits.
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 \
        -o "-h 127.0.0.1 -p $port -k $dir -c max_connections=200 ${KW_PG_SERVER_OPTS--c fsync=off -c full_page_writes=off}" \
        start >/dev/null
}

cmd_start() {
    if load_state && [ -d "$dir/data" ]; then
        if is_up; then url_of "$port"; return 0; fi
        server_start
        url_of "$port"
        return 0
    fi
    local bin; bin=$(pg_bin)
    dir=$(mktemp -d /tmp/keyward-pg.XXXXXX)
    chmod 755 "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
    port=$(free_port)
    printf 'dir=%s\nport=%s\n' "$dir" "$port" >"$state"
    local tries=0
    until server_start; do
        # The port may have been taken between picking and binding: pick another.
        tries=$((tries + 1))
        if [ "$tries" -ge 5 ]; then
            echo "pg-test-cluster: could not start PostgreSQL; log:" >&2
            cat "$dir/log" >&2 || true
            exit 1
        fi
        port=$(free_port)
        printf 'dir=%s\nport=%s\n' "$dir" "$port" >"$state"
    done
    url_of "$port"
}

cmd_stop() {
    if ! load_state; then return 0; fi
    if [ -d "$dir/data" ]; then
        as_owner "$(pg_bin)/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    case "$dir" in /tmp/keyward-pg.*) rm -rf "$dir" ;; esac
    rm -f "$state"
}

cmd_down() {
    load_state || { echo "pg-test-cluster: no cluster" >&2; exit 1; }
    as_owner "$(pg_bin)/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
}

cmd_up() {
    load_state || { echo "pg-test-cluster: no cluster" >&2; exit 1; }
    is_up || server_start
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
down) cmd_down ;;
up) cmd_up ;;
url) load_state && is_up && url_of "$port" || exit 1 ;;
status) load_state && is_up ;;
*)
    echo "usage: $0 start|stop|url|status|down|up" >&2
    exit 2
    ;;
esac
