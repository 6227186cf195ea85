#!/usr/bin/env bash
# tests/coherence/run-sync-pg.sh TEST_BINARY - runs the sync module's pg_* unit tests
# (tests/unit/sync/*.c: follower_test.c, two instances over one database, follower,
# catch-up over a gap; commit_test.c, group commit on PostgreSQL) against a throwaway cluster
# (scripts/pg-test-cluster.sh, its own state file), in a database of their own; the
# cluster is removed afterwards whatever happened.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=$1
cluster="$here/scripts/pg-test-cluster.sh"
state=$(mktemp /tmp/keyward-pg-api.XXXXXX)
rm -f "$state" # the cluster script creates it on start
export KW_PG_STATE=$state
trap 'bash "$cluster" stop' EXIT
url=$(bash "$cluster" start)
psql -q -X -v ON_ERROR_STOP=1 "$url" -c "CREATE DATABASE kw_api_follow" >/dev/null
base=${url%%\?*}
KEYWARD_PG_URL="${base%/*}/kw_api_follow"
export KEYWARD_PG_URL
mapfile -t names < <(sed -n 's/^KW_TEST(\(pg_[a-z0-9_]*\)).*/\1/p' "$here"/tests/unit/sync/*.c)
[ "${#names[@]}" -gt 0 ] || { echo "run-sync-pg.sh: no pg_* tests found" >&2; exit 1; }
echo "PostgreSQL at $KEYWARD_PG_URL; ${#names[@]} tests"
"$bin" "${names[@]}"
