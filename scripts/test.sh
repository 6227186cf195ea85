#!/usr/bin/env bash
# Runs every test: installs what is missing, then
#   1. a release build (gcc, -Werror): unit, conformance, end-to-end tests (SQLite), bench smoke;
#   2. PostgreSQL (the release build): a throwaway cluster on a free loopback port
#      (scripts/pg-test-cluster.sh), the store's pg unit tests (ctest -L pg) and the WHOLE
#      end-to-end suite against it (KEYWARD_TEST_PG_URL: a fresh database per server, plus the
#      multi-instance and outage tests that only run there); the cluster is removed on exit;
#   3. an AddressSanitizer + UndefinedBehaviorSanitizer build (clang): the same suites, the
#      PostgreSQL stage included;
#   4. libFuzzer targets (clang), each for KW_FUZZ_SECONDS (default 60).
# Before them, a formatting check: every tracked C file as the house .clang-format has it.
# Set KW_SKIP_PG=1, KW_SKIP_SANITIZE=1 or KW_SKIP_FUZZ=1 to skip a stage locally (CI runs all).
# KW_CONFORMANCE_DIR: SpiceDB's validation files (a folder holding spicedb/,
# spicedb-exhaustive/, spicedb-caveats/), an optional input; without it the conformance
# stage is reported skipped. Every run passes the current value to cmake, so setting or
# unsetting it between runs takes effect.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc)
corpus=${KW_CONFORMANCE_DIR:-}
if [ -n "$corpus" ]; then
  [ -d "$corpus" ] || { echo "test.sh: KW_CONFORMANCE_DIR=$corpus is not a folder" >&2; exit 2; }
  corpus=$(cd "$corpus" && pwd)
fi
bash "$here/scripts/install-deps.sh"

stage() { printf '\n==== %s ====\n' "$*"; }

# pg_stage BUILD_DIR: the PostgreSQL tests of one build against a throwaway cluster.
pg_stage() {
  [ "${KW_SKIP_PG:-0}" != 1 ] || return 0
  local build=$1
  stage "PostgreSQL ($(basename "$build"))"
  # A state file of our own: never touches a developer's cluster (nor the one
  # tests/pg/run-unit.sh starts for itself on another free port).
  KW_PG_STATE=$(mktemp /tmp/keyward-pg-ci.XXXXXX)
  rm -f "$KW_PG_STATE" # the cluster script creates it on start
  export KW_PG_STATE
  trap 'bash "$here/scripts/pg-test-cluster.sh" stop' EXIT
  KEYWARD_TEST_PG_URL=$(bash "$here/scripts/pg-test-cluster.sh" start)
  export KEYWARD_TEST_PG_URL
  echo "PostgreSQL at $KEYWARD_TEST_PG_URL"
  (cd "$build" && ctest --output-on-failure -L pg)
  # The million-relationship import/export runs at full size in the release stage; here
  # (PostgreSQL, and the sanitizer build) a tenth of it exercises the same paths.
  (cd "$here" && KEYWARD_BIN="$build/keyward" KW_E2E_MILLION=${KW_E2E_MILLION:-100000} \
    /usr/bin/python3 -m pytest -q -p no:cacheprovider -rs tests/e2e)
  bash "$here/scripts/pg-test-cluster.sh" stop
  trap - EXIT
  unset KEYWARD_TEST_PG_URL KW_PG_STATE
}

stage "formatting (clang-format, .clang-format)"
c_files=$(cd "$here" && { git ls-files '*.c' '*.h' 2>/dev/null ||
  find src tests bench -name '*.[ch]'; })
# shellcheck disable=SC2086 # one path per word (the C files have no spaces)
if ! (cd "$here" && clang-format --dry-run -Werror $c_files); then
  echo "test.sh: the files above are not formatted; run clang-format -i on them" >&2
  exit 1
fi
echo "formatting: ok"

stage "release build (gcc)"
cmake -S "$here" -B "$here/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKW_WERROR=ON \
  -DKW_CONFORMANCE_DIR="$corpus" >/dev/null
cmake --build "$here/build" -j"$jobs"
stage "tests (release)"
(cd "$here/build" && ctest --output-on-failure -j"$jobs" -LE 'fuzz|pg')
[ -n "$corpus" ] || echo "conformance: SpiceDB corpus SKIPPED (KW_CONFORMANCE_DIR is not set)"

pg_stage "$here/build"

if [ "${KW_SKIP_SANITIZE:-0}" != 1 ]; then
  stage "AddressSanitizer + UndefinedBehaviorSanitizer build (clang)"
  CC=clang cmake -S "$here" -B "$here/build-asan" -DCMAKE_BUILD_TYPE=Debug -DKW_WERROR=ON \
    -DKW_SANITIZE=address,undefined -DKW_CONFORMANCE_DIR="$corpus" >/dev/null
  cmake --build "$here/build-asan" -j"$jobs"
  stage "tests (ASan+UBSan)"
  (cd "$here/build-asan" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    KW_E2E_MILLION=${KW_E2E_MILLION:-100000} \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --output-on-failure -j"$jobs" -LE 'fuzz|bench|pg')
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    pg_stage "$here/build-asan"
fi

if [ "${KW_SKIP_FUZZ:-0}" != 1 ]; then
  stage "fuzzing (libFuzzer, ${KW_FUZZ_SECONDS:-60}s per target)"
  CC=clang cmake -S "$here" -B "$here/build-fuzz" -DCMAKE_BUILD_TYPE=Debug -DKW_FUZZ=ON \
    -DKW_FUZZ_SECONDS="${KW_FUZZ_SECONDS:-60}" -DKW_SANITIZE=address,undefined \
    -DKW_CONFORMANCE_DIR="$corpus" >/dev/null
  fuzzers=$(cd "$here/tests/fuzz" && ls fuzz_*.c | sed 's/\.c$//')
  # shellcheck disable=SC2086 # one target name per word
  cmake --build "$here/build-fuzz" -j"$jobs" --target $fuzzers
  (cd "$here/build-fuzz" && ctest --output-on-failure -L fuzz)
fi
if [ -n "$corpus" ]; then
  stage "all tests passed"
else
  stage "all tests passed; SpiceDB conformance SKIPPED (set KW_CONFORMANCE_DIR to run it)"
fi
