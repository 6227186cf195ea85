#!/usr/bin/env bash
# tests/pg/run-unit.sh TEST_BINARY - runs the PostgreSQL tests of a unit test executable
# (every KW_TEST named pg_* in tests/unit/store/*.c) against a throwaway cluster:
# starts one on a free loopback port (scripts/pg-test-cluster.sh, its own state file),
# exports KEYWARD_PG_URL and KEYWARD_PG_CLUSTER (the outage test stops and restarts the
# server through it), and removes the cluster afterwards whatever happened.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=$1
cluster="$here/scripts/pg-test-cluster.sh"
state=$(mktemp /tmp/keyward-pg-state.XXXXXX)
rm -f "$state" # the cluster script creates it on start
export KW_PG_STATE=$state
trap 'bash "$cluster" stop' EXIT
KEYWARD_PG_URL=$(bash "$cluster" start)
export KEYWARD_PG_URL KEYWARD_PG_CLUSTER=$cluster
mapfile -t names < <(sed -n 's/^KW_TEST(\(pg_[a-z0-9_]*\)).*/\1/p' "$here"/tests/unit/store/*.c)
if [ "${#names[@]}" -eq 0 ]; then
    echo "run-unit.sh: no pg_* tests found" >&2
    exit 1
fi
echo "PostgreSQL at $KEYWARD_PG_URL; ${#names[@]} tests"
"$bin" "${names[@]}"
