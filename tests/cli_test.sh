#!/usr/bin/env bash
# End-to-end tests of the phiaudit command-line tool (keygen, log).
#
#   bash tests/cli_test.sh PATH/TO/phiaudit
#
# meson: test('cli', find_program('bash'), args : [files('cli_test.sh'), phiaudit_cli.full_path()])
#
# Every event uses the canary patient ID below; at the end no stderr/stdout and no written
# log file may contain it (or the other markers) in plain text. Prints one "ok"/"not ok"
# line per check and finally "N passed, M failed"; exits 1 if any check failed.
set -u

PHIAUDIT=${1:?usage: cli_test.sh PATH/TO/phiaudit}
CANARY='CANARY-PATIENT-7f3a9c'
MARK='HOSTILE-MARK-7f3a9c'     # put inside hostile values; must never be echoed either
MAX_LINE=1048576

T=$(mktemp -d "${TMPDIR:-/tmp}/phiaudit-cli-test.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
umask 077

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok $((passed + failed)) - $1"; }
not_ok() {
    failed=$((failed + 1))
    echo "not ok $((passed + failed)) - $1"
    shift
    local line
    for line in "$@"; do echo "#   $line"; done
}

# run NAME [ARGS...]: run phiaudit with stdin from $STDIN (default /dev/null); sets RC, OUT,
# ERR (files $T/NAME.out, $T/NAME.err).
run() {
    local name=$1
    shift
    OUT=$T/$name.out
    ERR=$T/$name.err
    "$PHIAUDIT" "$@" <"${STDIN:-/dev/null}" >"$OUT" 2>"$ERR"
    RC=$?
}

# expect_rc DESC CODE...: the last run exited with one of CODEs.
expect_rc() {
    local desc=$1 code
    shift
    for code in "$@"; do
        if [ "$RC" -eq "$code" ]; then
            ok "$desc (exit $RC)"
            return 0
        fi
    done
    not_ok "$desc" "exit status $RC, expected one of: $*" "stderr: $(head -c 600 "$ERR")"
    return 1
}

# expect_err DESC PATTERN: stderr of the last run matches the extended regex.
expect_err() {
    if grep -Eq -- "$2" "$ERR"; then ok "$1"; else not_ok "$1" "stderr lacks /$2/: $(head -c 600 "$ERR")"; fi
}

# expect_no_err DESC FIXED: stderr of the last run does not contain the fixed string.
expect_no_err() {
    if grep -aFq -- "$2" "$ERR"; then not_ok "$1" "stderr contains '$2'"; else ok "$1"; fi
}

# Number of frames in a log file (each starts with the magic "PHA1").
frames() { if [ -f "$1" ]; then grep -aoF PHA1 "$1" | wc -l; else echo 0; fi; }

expect_frames() {
    local n
    n=$(frames "$2")
    if [ "$n" -eq "$3" ]; then ok "$1 ($n frames)"; else not_ok "$1" "$n frames in $2, expected $3"; fi
}

# event [EXTRA]: one JSON line for the canary patient; EXTRA is appended inside the object.
event() { printf '{"clinician":"dr-1234","patient":"%s","action":"R","outcome":0%s}\n' "$CANARY" "${1:-}"; }

# ---- help and usage ---------------------------------------------------------------------

for args in "--help" "-h" "help" "keygen --help" "log --help" "help keygen" "help log"; do
    # shellcheck disable=SC2086
    run help $args
    if [ "$RC" -eq 0 ] && grep -q SYNOPSIS "$OUT" && grep -q "EXIT STATUS" "$OUT" &&
        grep -q EXAMPLES "$OUT" && [ ! -s "$ERR" ]; then
        ok "phiaudit $args prints the manual"
    else
        not_ok "phiaudit $args prints the manual" "exit $RC, stderr: $(head -c 300 "$ERR")"
    fi
done
run version --version
expect_rc "--version" 0

"$PHIAUDIT" --help >/dev/full 2>"$T/full.err"
RC=$? ERR=$T/full.err
expect_rc "--help onto a full disk is an error" 3

run noargs
expect_rc "no command is a usage error" 3
run badcmd frobnicate
expect_rc "unknown command" 3
expect_err "unknown command is named" "unknown command 'frobnicate'"
run badopt log --bogus
expect_rc "unknown option" 3
expect_err "unknown option is named" "unknown option '--bogus'"
expect_err "usage errors point to --help" "phiaudit log --help"
run badopt2 keygen --force "$T/x"
expect_rc "keygen: unknown option" 3

# ---- keygen -----------------------------------------------------------------------------

KEY=$T/audit.key
run keygen keygen "$KEY"
expect_rc "keygen creates a key" 0
if grep -Eqx '[0-9a-f]{32}' "$OUT" && [ "$(wc -l <"$OUT")" -eq 1 ]; then
    ok "keygen prints exactly a 32-hex-digit key ID"
else
    not_ok "keygen prints exactly a 32-hex-digit key ID" "stdout: $(head -c 200 "$OUT")"
fi
KEYID=$(cat "$OUT")
mode=$(stat -c %a "$KEY" 2>/dev/null)
if [ "$mode" = 600 ]; then ok "key file mode is 0600"; else not_ok "key file mode is 0600" "mode $mode"; fi
if grep -aqF "$KEYID" "$ERR"; then not_ok "keygen prints nothing on stderr"; elif [ -s "$ERR" ]; then
    not_ok "keygen prints nothing on stderr" "$(cat "$ERR")"; else ok "keygen prints nothing on stderr"; fi

cp -p "$KEY" "$T/audit.key.orig"
run keygen_again keygen "$KEY"
expect_rc "keygen refuses to overwrite" 3
expect_err "keygen overwrite message names the path" "^phiaudit keygen: .+: $T/audit.key\$"
if cmp -s "$KEY" "$T/audit.key.orig"; then ok "existing key file unchanged"; else not_ok "existing key file unchanged"; fi

ln -s "$T/symlink-target.key" "$T/link.key"
run keygen_link keygen "$T/link.key"
expect_rc "keygen refuses a symlink" 3
if [ -e "$T/symlink-target.key" ]; then not_ok "keygen did not follow the symlink"; else ok "keygen did not follow the symlink"; fi

run keygen_nodir keygen "$T/no/such/dir/k"
expect_rc "keygen into a missing directory" 3
run keygen_noarg keygen
expect_rc "keygen without FILE" 3
run keygen_two keygen "$T/a.key" "$T/b.key"
expect_rc "keygen with two FILEs" 3

# ---- log: key and sink problems ---------------------------------------------------------

LOGARGS=(--clinician dr-1234 --patient "$CANARY" --action read --outcome success)

cp -p "$KEY" "$T/open.key"
chmod 0644 "$T/open.key"
run perms log --key "$T/open.key" --sink "file:$T/perms.log" "${LOGARGS[@]}"
expect_rc "log refuses a 0644 key file" 3
expect_err "the message mentions permissions" "permission"
if [ -e "$T/perms.log" ]; then not_ok "no log file created with a bad key"; else ok "no log file created with a bad key"; fi

run nokeyfile log --key "$T/missing.key" --sink "file:$T/x.log" "${LOGARGS[@]}"
expect_rc "missing key file" 3
expect_err "missing key file is named" "$T/missing.key"

printf 'not a key\n' >"$T/bad.key"
chmod 600 "$T/bad.key"
run badkey log --key "$T/bad.key" --sink "file:$T/x.log" "${LOGARGS[@]}"
expect_rc "malformed key file" 3

run nokey log --sink "file:$T/x.log" "${LOGARGS[@]}"
expect_rc "log without --key" 3
run nosink log --key "$KEY" "${LOGARGS[@]}"
expect_rc "log without --sink" 3
run badscheme log --key "$KEY" --sink "bogus:whatever" "${LOGARGS[@]}"
expect_rc "unknown sink scheme" 3
run secret log --key "$KEY" --sink "postgresql://auditor:s3cr3t-PW@db.example/audit?sslpassword=pw2-s3cr3t" "${LOGARGS[@]}"
expect_rc "unusable sink URI with credentials" 3
expect_no_err "the URI password is masked" "s3cr3t"
printf 'precious data\n' >"$T/precious.txt"
cp "$T/precious.txt" "$T/precious.orig"
run notalog log --key "$KEY" --sink "file:$T/precious.txt" "${LOGARGS[@]}"
expect_rc "a sink file that is not a phiaudit log is refused" 3
if cmp -s "$T/precious.txt" "$T/precious.orig"; then ok "...and left untouched"; else not_ok "...and left untouched"; fi
run baddir log --key "$KEY" --sink "file:$T/no/such/dir/x.log" "${LOGARGS[@]}"
expect_rc "sink in a missing directory" 3
expect_err "the failing sink is named" "no/such/dir/x.log"

# ---- log: one event from options --------------------------------------------------------

run one log --key "$KEY" --sink "file:$T/one.log" "${LOGARGS[@]}" --type rest --subtype read \
    --purpose TREAT --detail "opened chart" --break-glass --start 2026-12-03T10:00:00.123456Z \
    --duration-us 2500 --app cli-test --durability sync
expect_rc "log one event from options" 0
if [ -s "$T/one.log" ]; then ok "log file exists and is not empty"; else not_ok "log file exists and is not empty"; fi
expect_frames "stream open + 1 event + stream close" "$T/one.log" 3
expect_err "summary line" "^phiaudit log: 1 record written\$"

run one_eq log "--key=$KEY" "--sink=file:$T/one.log" --clinician=dr-1 "--patient=$CANARY" \
    --action=C --outcome=12 --start=1764756000000000 -q
expect_rc "--opt=value forms, numeric outcome and µs start" 0
if [ -s "$ERR" ]; then not_ok "--quiet prints nothing" "$(cat "$ERR")"; else ok "--quiet prints nothing"; fi
expect_frames "second stream appended to the same file" "$T/one.log" 6

run two_sinks log --key "$KEY" --sink "file:$T/s1.log" --sink "file:$T/s2.log" --sink memory: \
    "${LOGARGS[@]}" --durability group
expect_rc "three sinks" 0
expect_frames "first sink written" "$T/s1.log" 3
expect_frames "second sink written" "$T/s2.log" 3

run missing_req log --key "$KEY" --sink "file:$T/x.log" --clinician dr-1 --patient "$CANARY" --action R
expect_rc "event options without --outcome" 3
expect_err "the missing option is named" "missing --outcome"
run bad_action log --key "$KEY" --sink "file:$T/x.log" "${LOGARGS[@]/read/peek}"
expect_rc "invalid --action" 3
run bad_start log --key "$KEY" --sink "file:$T/x.log" "${LOGARGS[@]}" --start 2026-02-30T00:00:00Z
expect_rc "invalid --start (Feb 30)" 3
run bad_dur log --key "$KEY" --sink "file:$T/x.log" "${LOGARGS[@]}" --duration-us -5
expect_rc "negative --duration-us" 3
run twice log --key "$KEY" --sink "file:$T/x.log" "${LOGARGS[@]}" --patient "$CANARY"
expect_rc "an event option given twice" 3
expect_no_err "...without echoing the value" "$CANARY"
run stray log --key "$KEY" --sink "file:$T/x.log" --clinician dr-1 --patient "$CANARY" "$MARK" \
    --action R --outcome 0
expect_rc "a stray argument (unquoted value)" 3
expect_no_err "...is not echoed" "$MARK"
run badopt_val log --key "$KEY" --sink "file:$T/x.log" "--$MARK=$CANARY"
expect_rc "an unknown option carrying a value" 3
expect_no_err "...does not echo the value" "$CANARY"
if [ -e "$T/x.log" ]; then not_ok "usage errors create no log file"; else ok "usage errors create no log file"; fi

run lib_reject log --key "$KEY" --sink "file:$T/rej.log" --clinician "$(printf 'dr\001x')" \
    --patient "$CANARY" --action R --outcome 0
expect_rc "library rejects a control character in --clinician" 1
expect_err "...with its error text" "^phiaudit log: .+"
expect_frames "...and the stream is still closed cleanly" "$T/rej.log" 2

# ---- log: JSON Lines --------------------------------------------------------------------

{
    event ',"type":"rest","subtype":"read","purpose":"TREAT","detail":"chart \"A\" \\ ok","break_glass":true,"start":"2026-12-03T10:00:00.123456Z","duration_us":2500'
    echo
    echo '   '
    printf '{"clinician":"dr-2","patient":"%s","action":"update","outcome":"minor","start":1764756000000000,"detail":null}\r\n' "$CANARY"
    printf '  { "patient" : "%s" , "outcome" : 8 , "action" : "E" , "clinician" : "dr-\\u00e9\\ud83d\\ude00" }  \n' "$CANARY"
} >"$T/good.in"
STDIN=$T/good.in run good log --key "$KEY" --sink "file:$T/good.log"
expect_rc "JSON Lines: 3 good lines (and blank ones)" 0
expect_err "summary counts 3 records" "^phiaudit log: 3 records written\$"
expect_frames "open + 3 + close" "$T/good.log" 5

{ event; printf '{"clinician":"dr-1","patient":"%s","action":"R"}\n' "$CANARY"; event; } >"$T/bad2.in"
STDIN=$T/bad2.in run bad2 log --key "$KEY" --sink "file:$T/bad2.log"
expect_rc "JSON Lines: bad line 2" 1
expect_err "stderr says line 2" "^phiaudit log: line 2: "
expect_err "stderr names the missing key" 'missing "outcome"'
expect_err "summary counts the record before it" "1 record written"
expect_frames "the record before the bad line is written and the stream closed" "$T/bad2.log" 3

{ event; echo; printf '{"clinician":"dr-\\u0007","patient":"%s","action":"R","outcome":0}\n' "$CANARY"; } >"$T/lib3.in"
STDIN=$T/lib3.in run lib3 log --key "$KEY" --sink "file:$T/lib3.log"
expect_rc "JSON Lines: library rejects line 3 (control character)" 1
expect_err "line numbers count blank lines" "^phiaudit log: line 3: "
expect_frames "line 1 written, stream closed" "$T/lib3.log" 3

# json_case DESC EXPECTED-ERR-REGEX LINE: one malformed line must give exit 1 and the message.
json_case() {
    printf '%s\n' "$3" >"$T/case.in"
    STDIN=$T/case.in run "case$((passed + failed))" log --key "$KEY" --sink "file:$T/cases.log"
    if [ "$RC" -eq 1 ] && grep -Eq -- "^phiaudit log: line 1: .*$2" "$ERR" &&
        ! grep -aqF -- "$CANARY" "$ERR" && ! grep -aqF -- "$MARK" "$ERR"; then
        ok "JSON: $1"
    else
        not_ok "JSON: $1" "exit $RC, stderr: $(head -c 400 "$ERR")"
    fi
}
P="\"patient\":\"$CANARY\""
json_case "not an object" "expected a JSON object" "[\"$CANARY\"]"
json_case "unknown key (not echoed)" "unknown key" "{\"$MARK\":\"x\",$P,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0}"
json_case "duplicate key" "duplicate key" "{$P,$P,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0}"
json_case "duplicate key via escape" "duplicate key" "{$P,\"p\\u0061tient\":\"x\",\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0}"
json_case "trailing garbage" "after the object" "{$P,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0} $MARK"
json_case "two objects on a line" "after the object" "{$P,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0}{}"
json_case "trailing comma" "expected a string key" "{$P,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0,}"
json_case "nested object" "nested" "{$P,\"clinician\":{\"x\":\"$MARK\"},\"action\":\"R\",\"outcome\":0}"
json_case "array value" "nested" "{$P,\"clinician\":[\"$MARK\"],\"action\":\"R\",\"outcome\":0}"
json_case "deep nesting" "nested" "{\"a\":$(printf '[%.0s' $(seq 1 5000))}"
json_case "fraction" "integers" "{$P,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0.0}"
json_case "exponent" "integers" "{$P,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0,\"duration_us\":1e3}"
json_case "leading zero" "leading zero" "{$P,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":00}"
json_case "integer overflow" "out of range" "{$P,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0,\"duration_us\":99999999999999999999}"
json_case "wrong type" '"clinician" must be a string' "{$P,\"clinician\":42,\"action\":\"R\",\"outcome\":0}"
json_case "bad outcome" '"outcome" must be' "{$P,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":3}"
json_case "bad action" '"action" must be' "{$P,\"clinician\":\"c\",\"action\":\"$MARK\",\"outcome\":0}"
json_case "break_glass not a bool" '"break_glass" must be' "{$P,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0,\"break_glass\":1}"
json_case "start not UTC" '"start" must be' "{$P,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0,\"start\":\"2026-12-03T10:00:00+01:00\"}"
json_case "negative duration" '"duration_us" must be' "{$P,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0,\"duration_us\":-1}"
json_case "missing patient (null)" 'missing "patient"' "{\"patient\":null,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0}"
json_case "\\u0000" "embedded NUL" "{$P,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0,\"detail\":\"$MARK\\u0000\"}"
json_case "lone high surrogate" "surrogate" "{$P,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0,\"detail\":\"$MARK\\ud800\"}"
json_case "lone low surrogate" "surrogate" "{$P,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0,\"detail\":\"$MARK\\udc00\\ud800\"}"
json_case "bad \\u escape" "escape" "{$P,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0,\"detail\":\"$MARK\\u12G4\"}"
json_case "unknown escape" "escape" "{$P,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0,\"detail\":\"$MARK\\x41\"}"
json_case "raw tab in string" "control character" "{$P,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0,\"detail\":\"$MARK	x\"}"
json_case "unterminated string" "unterminated" "{$P,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0,\"detail\":\"$MARK"
json_case "single quotes" "expected a string key" "{'patient':'$CANARY'}"
json_case "true misspelled" "invalid value" "{$P,\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0,\"break_glass\":tru}"

# Raw bytes that printf must produce (not expressible in the quoted strings above).
raw_case() {
    printf "$2" >"$T/raw.in"
    STDIN=$T/raw.in run "raw$((passed + failed))" log --key "$KEY" --sink "file:$T/cases.log"
    if [ "$RC" -eq 1 ] && grep -Eq -- "^phiaudit log: line 1: .*$3" "$ERR" &&
        ! grep -aqF -- "$CANARY" "$ERR" && ! grep -aqF -- "$MARK" "$ERR"; then
        ok "JSON raw bytes: $1"
    else
        not_ok "JSON raw bytes: $1" "exit $RC, stderr: $(head -c 400 "$ERR")"
    fi
}
raw_case "invalid UTF-8 (0xff)" "{\"patient\":\"$CANARY\xff$MARK\",\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0}\n" "invalid UTF-8"
raw_case "overlong UTF-8 (0xc0 0xaf)" "{\"patient\":\"$CANARY\xc0\xaf\",\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0}\n" "invalid UTF-8"
raw_case "UTF-8-encoded surrogate" "{\"patient\":\"$CANARY\xed\xa0\x80\",\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0}\n" "invalid UTF-8"
raw_case "truncated UTF-8 at end of string" "{\"patient\":\"$CANARY\xe2\x82\",\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0}\n" "invalid UTF-8"
raw_case "raw NUL byte" "{\"patient\":\"$CANARY\x00$MARK\",\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0}\n" "NUL"
raw_case "UTF-8 BOM" "\xef\xbb\xbf{\"patient\":\"$CANARY\",\"clinician\":\"c\",\"action\":\"R\",\"outcome\":0}\n" "expected a JSON object"

# hostile DESC EXTRA: values the library may accept or reject, but must not crash on or echo.
hostile() {
    event "$2" >"$T/hostile.in"
    STDIN=$T/hostile.in run "hostile$((passed + failed))" log --key "$KEY" --sink "file:$T/hostile.log"
    if { [ "$RC" -eq 0 ] || [ "$RC" -eq 1 ]; } && ! grep -aqF -- "$CANARY" "$ERR" &&
        ! grep -aqF -- "$MARK" "$ERR" && ! grep -aqF -- '%n' "$ERR"; then
        ok "hostile: $1 (exit $RC)"
    else
        not_ok "hostile: $1" "exit $RC, stderr: $(head -c 400 "$ERR")"
    fi
}
hostile "\\u2028 and \\u2029 in detail" ",\"detail\":\"$MARK\\u2028x\\u2029\""
hostile "quotes and backslashes" ",\"detail\":\"$MARK \\\"\\\\\\\"\\\\\\/ \\\\u0000\""
hostile "printf directives in every field" ",\"detail\":\"$MARK%n%s%s%n%p\",\"type\":\"%n%s\",\"subtype\":\"%s%s%s%s\",\"purpose\":\"%x%n\""
printf '{"clinician":"%%n%%s%%n%s","patient":"%s","action":"R","outcome":0}\n' "$MARK" "$CANARY" >"$T/fmt.in"
STDIN=$T/fmt.in run fmt log --key "$KEY" --sink "file:$T/hostile.log"
expect_rc "hostile: %n%s as clinician ID" 0 1
expect_no_err "...not echoed" "$MARK"
hostile "terminal escape in patient via \\u001b" ",\"detail\":\"$MARK\\u001b[2J\\u001b]0;pwned\\u0007\""
hostile "escaped control characters in detail" ",\"detail\":\"$MARK\\b\\f\\n\\r\\t\\u0001\\u007f\\u0085\""
hostile "astral characters" ",\"detail\":\"$MARK \\ud83d\\ude00 𝄞 \\uFFFF \\uFEFF\""
hostile "detail over 4096 bytes" ",\"detail\":\"$MARK$(head -c 5000 /dev/zero | tr '\0' x)\""
hostile "type over 256 bytes" ",\"type\":\"$MARK$(head -c 300 /dev/zero | tr '\0' x)\""
hostile "empty type" ",\"type\":\"\""
hostile "empty detail" ",\"detail\":\"\""
hostile "extreme integers" ",\"start\":9223372036854775807,\"duration_us\":9223372036854775807"
hostile "smallest integer" ",\"duration_us\":-9223372036854775808"

# 1 MiB lines: a line of exactly MAX_LINE bytes is accepted, one byte more is not.
base=$(event)
{ printf '%s' "$base"; head -c $((MAX_LINE - ${#base})) /dev/zero | tr '\0' ' '; echo; } >"$T/max.in"
STDIN=$T/max.in run maxline log --key "$KEY" --sink "file:$T/max.log"
expect_rc "a line of exactly 1 MiB is accepted" 0
{ printf '%s' "$base"; head -c $((MAX_LINE - ${#base} + 1)) /dev/zero | tr '\0' ' '; echo; } >"$T/over.in"
STDIN=$T/over.in run overline log --key "$KEY" --sink "file:$T/max.log"
expect_rc "a line of 1 MiB + 1 byte is rejected" 1
expect_err "...with its line number" "^phiaudit log: line 1: line too long"
{ event; printf '{"clinician":"c","patient":"%s","action":"R","outcome":0,"detail":"%s' "$CANARY" "$MARK";
  head -c $MAX_LINE /dev/zero | tr '\0' A; printf '"}\n'; event; } >"$T/huge.in"
STDIN=$T/huge.in run huge log --key "$KEY" --sink "file:$T/huge.log"
expect_rc "a 1 MiB detail on line 2" 1
expect_err "...is reported as line 2" "^phiaudit log: line 2: line too long"
expect_no_err "...without echoing it" "$MARK"
expect_frames "...after writing line 1 and closing" "$T/huge.log" 3

printf '%s' "$base" >"$T/nonl.in"   # last line without a newline
STDIN=$T/nonl.in run nonl log --key "$KEY" --sink "file:$T/nonl.log"
expect_rc "last line without a newline" 0
expect_frames "...is written" "$T/nonl.log" 3

STDIN=/dev/null run empty log --key "$KEY" --sink "file:$T/empty.log"
expect_rc "empty input" 0
expect_err "summary says 0 records" "0 records written"
expect_frames "empty input still makes a complete stream" "$T/empty.log" 2

head -c 65536 /dev/urandom >"$T/random.in"
STDIN=$T/random.in run random log --key "$KEY" --sink "file:$T/random.log"
expect_rc "random bytes do not crash" 0 1

# ---- signals: SIGTERM while waiting for input closes the stream cleanly -----------------

mkfifo "$T/fifo"
"$PHIAUDIT" log --key "$KEY" --sink "file:$T/sig.log" --durability sync <"$T/fifo" \
    >"$T/sig.out" 2>"$T/sig.err" &
pid=$!
exec 9>"$T/fifo"
( event >&9 ) 2>/dev/null  # subshell: a SIGPIPE (binary died early) must not kill the script
for _ in $(seq 1 100); do
    [ "$(frames "$T/sig.log")" -ge 2 ] && break
    sleep 0.05
done
kill -TERM "$pid"
wait "$pid"
RC=$? ERR=$T/sig.err
exec 9>&-
expect_rc "SIGTERM while reading stdin" 143
expect_err "...is reported" "interrupted by signal"
expect_frames "...and the stream is closed cleanly" "$T/sig.log" 3

# ---- --blind-index: query finds the records through the header tags ------------------------

printf '{"clinician":"dr-bi","patient":"%s","action":"R","outcome":0}\n{"clinician":"dr-bi","patient":"other-bi","action":"U","outcome":0}\n' "$CANARY" >"$T/bi.in"
STDIN=$T/bi.in run bi-log log -q --blind-index --key "$KEY" --sink "file:$T/bi.log"
expect_rc "log --blind-index" 0
run bi-query query --key "$KEY" --patient other-bi "$T/bi.log"
expect_rc "query over blind-indexed records" 0
if [ "$(grep -c '"type":"data"' "$OUT")" = 1 ] && grep -q '"action":"U"' "$OUT"; then
    ok "...finds exactly the matching record"
else
    not_ok "...finds exactly the matching record" "$(head -c 300 "$OUT")"
fi
rm -f "$OUT" # decrypted output; the other patient must not stay on disk either

# ---- no PHI anywhere ----------------------------------------------------------------------

leaks=$(grep -alF -e "$CANARY" -e "$MARK" "$T"/*.err "$T"/*.out 2>/dev/null)
if [ -z "$leaks" ]; then ok "no canary in any stdout/stderr"; else not_ok "no canary in any stdout/stderr" $leaks; fi
logs=("$T"/*.log)
leaks=$(grep -alF -e "$CANARY" -e "$MARK" "${logs[@]}" 2>/dev/null)
if [ -z "$leaks" ]; then ok "no canary in plain text in any of ${#logs[@]} log files"; else
    not_ok "no canary in plain text in the log files" $leaks; fi
keyhex=$(grep -aoE '[0-9a-f]{64}' "$KEY" | head -n 1)
if [ -n "$keyhex" ] && grep -aqF "$keyhex" "$T"/*.err "$T"/*.out "${logs[@]}"; then
    not_ok "key bytes never printed or written"
else
    ok "key bytes never printed or written"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
