#!/usr/bin/env bash
# Run the example service the way the README does and check its log with the CLI:
# the exact number of records, intact verdict, decryptable, queryable, no plaintext PHI.
# usage: demo_test.sh PHIAUDIT_CLI CLINIC_DEMO
set -euo pipefail
cli=$1 demo=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
check() { if "$@"; then pass=$((pass + 1)); else echo "FAILED: $*"; fail=$((fail + 1)); fi; }

"$cli" keygen "$tmp/k" >/dev/null
"$demo" "$tmp/k" "$tmp/audit.log" 400 >"$tmp/demo.out"
check grep -q "400 sealed audit records" "$tmp/demo.out"
check test "$(grep -a -c 'MRN-' "$tmp/audit.log" || true)" = 0
"$cli" verify --key "$tmp/k" "$tmp/audit.log" >"$tmp/verify.out"; rc=$?
check test "$rc" = 0
"$cli" decrypt --key "$tmp/k" "$tmp/audit.log" >"$tmp/all.jsonl"
check test "$(grep -c '"type":"data"' "$tmp/all.jsonl")" = 400
check test "$(grep -c '"type":"open"' "$tmp/all.jsonl")" = 1
check test "$(grep -c '"type":"close"' "$tmp/all.jsonl")" = 1
# query agrees with a plain filter over the decrypted records
want=$(grep -c '"patient":"MRN-000228"' "$tmp/all.jsonl" || true)
got=$("$cli" query --key "$tmp/k" --patient MRN-000228 "$tmp/audit.log" | wc -l)
check test "$want" = "$got"
# keyless verification also passes
"$cli" verify "$tmp/audit.log" >/dev/null; rc=$?
check test "$rc" = 0
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
