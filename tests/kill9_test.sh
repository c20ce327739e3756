#!/usr/bin/env bash
# Crash safety: a SYNC writer is killed with SIGKILL at random moments, several times over
# the same log path. Afterwards every acknowledged record must be there and authentic, the
# verdict must be "incomplete" (crashed streams, torn tails), never "tampered", and no
# (stream, seq) — that is, no (key, nonce) — may appear twice across the runs.
# usage: kill9_test.sh PHIAUDIT_CLI ACK_WRITER
set -uo pipefail
cli=$1 writer=$2
T=$(mktemp -d "${TMPDIR:-/tmp}/phiaudit-kill9.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
check() { if "$@"; then pass=$((pass + 1)); else echo "FAILED: $*"; fail=$((fail + 1)); fi; }

"$cli" keygen "$T/key" >/dev/null
mkdir "$T/logs"
runs=6
for ((r = 0; r < runs; r++)); do
  "$writer" "$T/key" "file:$T/logs/audit.log?max_bytes=65536" >"$T/acks.$r" 2>/dev/null &
  pid=$!
  # let it start (a slow or sanitized build may take a while), then kill at a random moment
  for ((w = 0; w < 200; w++)); do [ -s "$T/acks.$r" ] && break; sleep 0.05; done
  sleep "0.$((RANDOM % 4 + 1))"
  kill -9 "$pid"
  wait "$pid" 2>/dev/null
done

"$cli" verify --key "$T/key" "$T/logs" >"$T/verify.out" 2>&1
rc=$?
check test "$rc" = 2
check grep -q "incomplete" "$T/verify.out"

# every acknowledgement of every run is among the authenticated records (kept in memory)
details=$("$cli" decrypt --key "$T/key" "$T/logs" 2>/dev/null |
  sed -n 's/.*"stream":"\([0-9a-f]*\)".*"detail":"\(ack-[0-9]*\)".*/\1 \2/p')
streams=$(echo "$details" | awk '{print $1}' | uniq)
check test "$(echo "$streams" | wc -l)" = "$runs"
# streams appear in run order: pair run r's acknowledgements with the r-th stream
r=0
for s in $streams; do
  sed "s/^/$s ack-/" "$T/acks.$r"
  r=$((r + 1))
done | sort >"$T/expected"
acked=$(wc -l <"$T/expected")
missing=$(echo "$details" | sort | comm -23 "$T/expected" - | wc -l)
echo "acknowledged: $acked, missing: $missing"
check test "$acked" -gt 0
check test "$missing" = 0

# no (stream, seq) twice: each pair names one (key, nonce)
dups=$("$cli" decrypt --key "$T/key" "$T/logs" 2>/dev/null |
  sed -n 's/.*"stream":"\([0-9a-f]*\)","seq":\([0-9]*\),.*/\1 \2/p' | sort | uniq -d | wc -l)
check test "$dups" = 0
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
