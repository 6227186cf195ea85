#!/usr/bin/env bash
# Installs the Debian 12 packages keyward needs to build, serve, test (unit, conformance,
# end-to-end, PostgreSQL, ASan+UBSan, libFuzzer) and benchmark.
# Idempotent: installs only what is missing. As root it runs apt-get itself; otherwise
# through sudo when sudo exists, else it stops and names what is missing.
set -euo pipefail
PKGS=(
  build-essential cmake pkg-config               # the build
  clang libclang-rt-14-dev llvm clang-format     # ASan+UBSan, libFuzzer, symbolizer, format
  libjansson-dev libsqlite3-dev libsodium-dev
  libyaml-dev libcurl4-openssl-dev libpq-dev libpcre2-dev
  tzdata                                         # IANA time zones for CEL timestamp getters
  postgresql                                     # the PostgreSQL stage (initdb, psql)
  python3 python3-pytest python3-requests        # the end-to-end suite
  curl                                           # the README's quick start (test_readme.py)
  wrk                                            # bench/svc_bench.sh
  protobuf-c-compiler libprotobuf-c-dev libnghttp2-dev   # the gRPC endpoint (src/grpc)
  nodejs                                         # the gRPC e2e stage (tests/grpc)
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm comes with Debian's own package, or inside a nodejs that bundles it.
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ ${#missing[@]} -gt 0 ] || exit 0
if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "install-deps: missing Debian packages: ${missing[*]}" >&2
  echo "install-deps: run as root, or install them (sudo is not available here)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
