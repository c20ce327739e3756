#!/usr/bin/env bash
# Read-path benchmark: write N records with `phiaudit log`, then time `verify` (keyless and
# with the key), `decrypt` and `query` over them, with peak memory (max RSS).
#   bench/bench_read.sh [BUILD_DIR] [RECORDS]        (defaults: build, 1000000)
# Prints one JSON object per command.
set -euo pipefail
build=${1:-build} n=${2:-1000000}
cli=$build/phiaudit
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$cli" keygen "$tmp/k" >/dev/null
awk -v n="$n" 'BEGIN { for (i = 0; i < n; i++)
  printf "{\"clinician\":\"dr-%03d\",\"patient\":\"MRN-%06d\",\"action\":\"R\",\"outcome\":0}\n", i % 97, i % 100003 }' |
  "$cli" log -q --key "$tmp/k" --sink "file:$tmp/audit.log" --durability none
size=$(stat -c %s "$tmp/audit.log")
run() { # NAME ARGS...
  local name=$1
  shift
  /usr/bin/time -f "%e %M" -o "$tmp/time" "$cli" "$@" >/dev/null 2>"$tmp/err" || true
  read -r secs rss_kb <"$tmp/time"
  awk -v name="$name" -v n="$n" -v s="$secs" -v rss="$rss_kb" -v bytes="$size" 'BEGIN {
    printf "{\"bench\":\"%s\",\"records\":%d,\"log_bytes\":%d,\"seconds\":%.2f,\"records_per_s\":%.0f,\"max_rss_kb\":%d}\n",
      name, n, bytes, s, (s > 0 ? n / s : 0), rss }'
}
run verify_keyless verify "$tmp/audit.log"
run verify_key verify --key "$tmp/k" "$tmp/audit.log"
run decrypt decrypt --key "$tmp/k" "$tmp/audit.log"
run query_patient query --key "$tmp/k" --patient MRN-000042 "$tmp/audit.log"
