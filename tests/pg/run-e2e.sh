#!/usr/bin/env bash
# tests/pg/run-e2e.sh [KEYWARD_BINARY] [PYTEST_ARGS...] - runs the end-to-end suite against a
# throwaway PostgreSQL cluster (scripts/pg-test-cluster.sh, its own state file and free port):
# every server the suite starts gets a fresh database, and the multi-instance and outage tests
# run. The cluster is removed afterwards whatever happened. Default binary: build/keyward.
#   bash tests/pg/run-e2e.sh build/keyward -k multi
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${1:-$here/build/keyward}
shift || true
cluster="$here/scripts/pg-test-cluster.sh"
KW_PG_STATE=$(mktemp /tmp/keyward-pg-e2e.XXXXXX)
rm -f "$KW_PG_STATE" # the cluster script creates it on start
export KW_PG_STATE
trap 'bash "$cluster" stop' EXIT
KEYWARD_TEST_PG_URL=$(bash "$cluster" start)
export KEYWARD_TEST_PG_URL
echo "PostgreSQL at $KEYWARD_TEST_PG_URL"
cd "$here"
KEYWARD_BIN=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin") \
    /usr/bin/python3 -m pytest -q -p no:cacheprovider -rs "$@" tests/e2e
