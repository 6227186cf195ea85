#!/usr/bin/env bash
# Runs `keyward validate` on one file and judges the outcome.
# Usage: check.sh pass        KEYWARD FILE            exit 0 expected
#        check.sh unsupported KEYWARD FILE            exit 1 + "not supported yet", no crash
#        check.sh fail        KEYWARD FILE TEXT...    exit 1 + every TEXT in the output
#        check.sh usage       KEYWARD [ARGS...]       exit 2 expected
set -u
mode=$1 bin=$2
shift 2
if [ "$mode" = usage ]; then
  out=$("$bin" validate "$@" 2>&1); rc=$?
else
  file=$1; shift
  out=$("$bin" validate "$file" 2>&1); rc=$?
fi
printf '%s\n' "$out"
crashed() {
  [ "$rc" -ge 128 ] || grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:|Assertion|assertion failed' <<<"$out"
}
if crashed; then echo "check.sh: crashed (exit $rc)"; exit 1; fi
case $mode in
  pass) [ "$rc" -eq 0 ] || { echo "check.sh: expected exit 0, got $rc"; exit 1; } ;;
  unsupported)
    [ "$rc" -eq 1 ] || { echo "check.sh: expected exit 1, got $rc"; exit 1; }
    grep -q 'not supported yet' <<<"$out" || { echo "check.sh: no 'not supported yet' message"; exit 1; } ;;
  fail)
    [ "$rc" -eq 1 ] || { echo "check.sh: expected exit 1, got $rc"; exit 1; }
    for t in "$@"; do
      grep -qF -- "$t" <<<"$out" || { echo "check.sh: output lacks: $t"; exit 1; }
    done ;;
  usage) [ "$rc" -eq 2 ] || { echo "check.sh: expected exit 2, got $rc"; exit 1; } ;;
  *) echo "check.sh: unknown mode $mode"; exit 2 ;;
esac
exit 0
