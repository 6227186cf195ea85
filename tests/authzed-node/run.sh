#!/usr/bin/env bash
# The official Node client's own test suite (@authzed/authzed-node's compiled
# dist/src/{v1,v1-promise,full,full-promises}.test.js, run with vitest) against
# `keyward serve-testing` on localhost:50051, where the suite expects SpiceDB's
# serve-testing (its tokens are fixed in the tests: localhost:50051, no TLS).
#
#   run.sh KEYWARD_BIN
#
# Installs the pinned packages (package.json + package-lock.json) with `npm ci` when
# node_modules is missing or older than the lock. Exit 77 (ctest: skipped), naming the
# reason, when node/npm is missing or npm cannot install (no network to the registry).
# Port 50051 (or the read-only 50052, or the HTTP gateway's 8443) already taken: exit 1 with the reason, never a
# run against whatever listens there. The server is stopped on every exit path.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:?usage: run.sh KEYWARD_BIN}"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "authzed_node SKIPPED: node and npm are needed (scripts/install-deps.sh installs them)"
  exit 77
fi
stamp="$here/node_modules/.keyward-installed"
if [ ! -f "$stamp" ] || [ "$here/package-lock.json" -nt "$stamp" ]; then
  if ! (cd "$here" && timeout 600 npm ci --no-audit --no-fund --loglevel=error); then
    echo "authzed_node SKIPPED: npm ci could not install the pinned packages (no network to the registry?)"
    exit 77
  fi
  touch "$stamp"
fi

# The suite dials localhost:50051, which may resolve to ::1 first: a server there would
# answer instead of ours, so both loopback addresses must be free.
port_taken() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}
for addr in 127.0.0.1 ::1; do
  for p in 50051 50052 8443; do
    if port_taken "$addr" "$p"; then
      echo "authzed_node FAILED: port $p on $addr is already in use; the suite needs" \
           "localhost:50051 (stop what listens there, e.g. another serve-testing)" >&2
      exit 1
    fi
  done
done

log="$(mktemp -d)"
out="$log/stdout"
"$bin" serve-testing --grpc-addr 127.0.0.1:50051 --readonly-grpc-addr 127.0.0.1:50052 \
  --http-addr 127.0.0.1:8443 \
  >"$out" 2>"$log/stderr" &
pid=$!
cleanup() {
  kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$log"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  grep -q '^listening on http://' "$out" 2>/dev/null && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "authzed_node FAILED: keyward serve-testing did not start:" >&2
    cat "$log/stderr" >&2
    exit 1
  fi
  sleep 0.1
done
if ! grep -q '^listening on grpc://' "$out"; then
  echo "authzed_node FAILED: keyward serve-testing is not listening after 10 s" >&2
  cat "$log/stderr" >&2
  exit 1
fi
cd "$here" && npx --no-install vitest run
rc=$?
# The server must also stop cleanly (exit 0: under ASan/UBSan, no report at exit).
kill -TERM "$pid" 2>/dev/null
wait "$pid"
srv_rc=$?
if [ "$rc" -eq 0 ] && [ "$srv_rc" -ne 0 ]; then
  echo "authzed_node FAILED: keyward serve-testing exited $srv_rc when stopped" >&2
  rc=1
fi
if [ "$rc" -ne 0 ]; then
  echo "--- keyward serve-testing's log ---" >&2
  tail -n 50 "$log/stderr" >&2
fi
exit "$rc"
