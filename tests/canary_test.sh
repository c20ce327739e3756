#!/usr/bin/env bash
# PHI never reaches disk in plaintext: drive every write path of the CLI with a canary
# patient ID — batches with rotation, rejected input, a writer killed with SIGKILL and the
# recovery after it, verification reports — keep every byte written in one directory, then
# grep all of it. Decrypted output is piped, never stored, and must contain the canary
# (so the scan is not vacuous).
# usage: canary_test.sh PHIAUDIT_CLI
set -uo pipefail
cli=$1
CANARY='CANARY-PATIENT-7f3a9c'
T=$(mktemp -d "${TMPDIR:-/tmp}/phiaudit-canary.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
umask 077
pass=0 fail=0
check() { if "$@"; then pass=$((pass + 1)); else echo "FAILED: $*"; fail=$((fail + 1)); fi; }

events() { # N: JSON Lines with the canary in patient, clinician and detail
  local i
  for ((i = 0; i < $1; i++)); do
    printf '{"clinician":"dr-%s","patient":"%s","action":"R","outcome":0,"detail":"chart of %s, line %d","purpose":"TREAT"}\n' \
      "$CANARY" "$CANARY" "$CANARY" "$i"
  done
}

"$cli" keygen "$T/key" >"$T/keygen.out" 2>"$T/keygen.err"
mkdir "$T/logs"
sink="file:$T/logs/audit.log?max_bytes=20000"

# 1. records that rotate the file several times (sync: one batch per record)
events 200 | "$cli" log --key "$T/key" --sink "$sink" --durability sync >"$T/log1.out" 2>"$T/log1.err"
check test $? = 0
check test "$(ls "$T/logs" | wc -l)" -gt 3

# 2. rejected input: the bad line's value must not be echoed
{ events 3; printf '{"clinician":"x","patient":"%s\\u0000","action":"R","outcome":0}\n' "$CANARY"; } |
  "$cli" log --key "$T/key" --sink "$sink" >"$T/log2.out" 2>"$T/log2.err"
check test $? = 1
check grep -q "line 4" "$T/log2.err"

# 3. a writer killed mid-stream, then a new writer on the same path
mkfifo "$T/fifo"
"$cli" log --key "$T/key" --sink "file:$T/logs/audit.log" --durability none <"$T/fifo" \
  >"$T/log3.out" 2>"$T/log3.err" &
pid=$!
exec 3>"$T/fifo"
events 2000 >&3
sleep 0.3
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
exec 3>&-
events 10 | "$cli" log --key "$T/key" --sink "$sink" >"$T/log4.out" 2>"$T/log4.err"
check test $? = 0

# 4. reports: keyless and keyed verification (a killed writer leaves the log incomplete)
"$cli" verify "$T/logs" >"$T/verify-keyless.out" 2>"$T/verify-keyless.err"
rc=$?
check test "$rc" = 0 -o "$rc" = 2
"$cli" verify --json --key "$T/key" "$T/logs" >"$T/verify.json" 2>"$T/verify.err"
rc=$?
check test "$rc" = 0 -o "$rc" = 2

# 5. the canary is really in the records (decrypted in a pipe only) ...
n=$("$cli" decrypt --key "$T/key" "$T/logs" 2>/dev/null | grep -c -F "$CANARY")
check test "$n" -ge 213
# ... and nowhere on disk
hits=$(grep -r -l -a -F "$CANARY" "$T" || true)
if [ -n "$hits" ]; then echo "canary found in: $hits"; fi
check test -z "$hits"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
