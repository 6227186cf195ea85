#!/usr/bin/env bash
# Proves the repository stands alone: clones the committed HEAD into an empty temporary
# folder (nothing beside it: no shared folder, no build), runs the README's test command there
# (every stage: release, PostgreSQL, ASan+UBSan, fuzz; the SpiceDB corpus stage is reported
# skipped unless KW_CONFORMANCE_DIR is set), and removes the folder. Exit status: test.sh's.
# Uncommitted changes are not part of the check.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d /tmp/keyward-alone.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
git clone -q "$here" "$tmp/keyward"
echo "check-standalone: $(git -C "$tmp/keyward" log --oneline -1) in $tmp/keyward"
cd "$tmp/keyward"
bash scripts/test.sh
