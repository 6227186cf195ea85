#!/usr/bin/env bash
# Runs every test: installs what is missing, then
#   1. a release build (gcc, -Werror): unit, conformance, end-to-end tests, bench smoke;
#   2. an AddressSanitizer + UndefinedBehaviorSanitizer build (clang): the same suites;
#   3. libFuzzer targets (clang), each for KW_FUZZ_SECONDS (default 60).
# Set KW_SKIP_SANITIZE=1 or KW_SKIP_FUZZ=1 to skip a stage locally (CI runs all).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc)
bash "$here/scripts/install-deps.sh"

stage() { printf '\n==== %s ====\n' "$*"; }

stage "release build (gcc)"
cmake -S "$here" -B "$here/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKW_WERROR=ON >/dev/null
cmake --build "$here/build" -j"$jobs"
stage "tests (release)"
(cd "$here/build" && ctest --output-on-failure -j"$jobs" -LE fuzz)

if [ "${KW_SKIP_SANITIZE:-0}" != 1 ]; then
  stage "AddressSanitizer + UndefinedBehaviorSanitizer build (clang)"
  CC=clang cmake -S "$here" -B "$here/build-asan" -DCMAKE_BUILD_TYPE=Debug -DKW_WERROR=ON \
    -DKW_SANITIZE=address,undefined >/dev/null
  cmake --build "$here/build-asan" -j"$jobs"
  stage "tests (ASan+UBSan)"
  (cd "$here/build-asan" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --output-on-failure -j"$jobs" -LE 'fuzz|bench')
fi

if [ "${KW_SKIP_FUZZ:-0}" != 1 ]; then
  stage "fuzzing (libFuzzer, ${KW_FUZZ_SECONDS:-60}s per target)"
  CC=clang cmake -S "$here" -B "$here/build-fuzz" -DCMAKE_BUILD_TYPE=Debug -DKW_FUZZ=ON \
    -DKW_FUZZ_SECONDS="${KW_FUZZ_SECONDS:-60}" -DKW_SANITIZE=address,undefined >/dev/null
  fuzzers=$(cd "$here/tests/fuzz" && ls fuzz_*.c | sed 's/\.c$//')
  # shellcheck disable=SC2086 # one target name per word
  cmake --build "$here/build-fuzz" -j"$jobs" --target $fuzzers
  (cd "$here/build-fuzz" && ctest --output-on-failure -L fuzz)
fi
stage "all tests passed"
