#!/usr/bin/env bash
# Runs one libFuzzer target for N seconds over a scratch copy of its seed corpus.
# Usage: run.sh FUZZER SEED_DIR SECONDS
set -euo pipefail
fuzzer=$1 seeds=$2 secs=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus"
[ -d "$seeds" ] && cp -r "$seeds"/. "$work/corpus/" 2>/dev/null || true
"$fuzzer" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix="$work/" "$work/corpus" 2>"$work/log" || {
  tail -n 60 "$work/log"
  for a in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
    [ -e "$a" ] && { echo "artifact: $a"; xxd "$a" | head -n 20; }
  done
  exit 1
}
grep -E "^#[0-9]+.*DONE|Done [0-9]+ runs" "$work/log" | tail -n 1
