#!/usr/bin/env bash
# Runs the gRPC e2e suite (grpc.test.js) against the keyward binary given as $1.
# Installs @authzed/authzed-node (package.json) with npm on first use; exits 77 (ctest:
# skipped) naming the reason when node/npm is missing or the install fails (no network).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:?usage: run.sh KEYWARD_BIN}"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "e2e_grpc SKIPPED: node and npm are needed (scripts/install-deps.sh installs them)"
  exit 77
fi
if [ ! -d "$here/node_modules/@authzed/authzed-node" ] || [ ! -d "$here/node_modules/grpc-js-reflection-client" ]; then
  if ! (cd "$here" && timeout 300 npm install --no-audit --no-fund --loglevel=error); then
    echo "e2e_grpc SKIPPED: npm could not install @authzed/authzed-node (no network to the registry?)"
    exit 77
  fi
fi
cd "$here" && KEYWARD_BIN="$bin" exec node --test grpc.test.js
