#!/usr/bin/env bash
# Runs the gRPC e2e suite (grpc.test.js) and the conformance corpus over gRPC
# (conformance.test.js: skipped unless KW_CONFORMANCE_DIR names the corpus) against the
# keyward binary given as $1. Installs package.json's packages (@authzed/authzed-node,
# grpc-js-reflection-client, yaml) with npm on first use; exits 77 (ctest: skipped) naming
# the reason when node/npm is missing or the install fails (no network).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:?usage: run.sh KEYWARD_BIN}"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "e2e_grpc SKIPPED: node and npm are needed (scripts/install-deps.sh installs them)"
  exit 77
fi
for dep in @authzed/authzed-node grpc-js-reflection-client yaml; do
  if [ ! -d "$here/node_modules/$dep" ]; then
    if ! (cd "$here" && timeout 300 npm install --no-audit --no-fund --loglevel=error); then
      echo "e2e_grpc SKIPPED: npm could not install package.json's packages (no network to the registry?)"
      exit 77
    fi
    break
  fi
done
cd "$here" && KEYWARD_BIN="$bin" exec node --test grpc.test.js conformance.test.js
