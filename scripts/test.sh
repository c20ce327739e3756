#!/usr/bin/env bash
# Quick start, step 2: the whole test suite — a normal build (warnings are errors), an
# ASan+UBSan build, a ThreadSanitizer build and a bounded libFuzzer run — followed by a
# scan of every test log for the canary patient ID.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

jobs=$(nproc)
# setup DIR [ARGS...]: configure a build directory once; show meson's output if it fails.
setup() {
  local dir=$1
  shift
  [ -f "$dir/build.ninja" ] && return 0
  rm -rf "$dir" # a directory left by an interrupted setup
  meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; rm -rf "$dir"; return 1; }
}
# suite DIR [ARGS...]: run meson test, keeping its summary for the total at the end.
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
suite() {
  local dir=$1
  shift
  meson test -C "$dir" --print-errorlogs --num-processes "$jobs" "$@" | tee -a "$summary"
}

setup build
meson configure build -Dwerror=true   # the build must stay warning-free
suite build

# Sanitizers: the Python suites load the library into an unsanitized interpreter and the
# install test rebuilds from scratch, so they run in the normal build only.
CC=gcc setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
  suite build-asan --no-suite python --no-suite install

# ThreadSanitizer over the concurrent parts: the logger (1,000,000 records from 8 threads,
# failure and retry paths) and the file sink. Fork tests are skipped: TSan cannot follow a
# threaded process through fork().
CC=clang setup build-tsan -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug -Dfuzz=disabled
TSAN_OPTIONS=halt_on_error=1 PHIAUDIT_TEST_NO_FORK=1 suite build-tsan logger sink_file

# clang: the libFuzzer target over the reader, run for a bounded number of inputs.
CC=clang setup build-fuzz -Dfuzz=enabled -Dtests=disabled
suite build-fuzz fuzz_reader

# PHI must never reach a test log in plaintext either.
if grep -F -l "CANARY-PATIENT-7f3a9c" build/meson-logs/testlog.txt build-asan/meson-logs/testlog.txt; then
  echo "FAIL: canary patient ID found in a test log" >&2
  exit 1
fi
awk '/^Ok:/ {ok += $2} /^Fail:|^Timeout:|^Unexpected Pass:/ {bad += $NF}
     END {printf "phiaudit: %d passed, %d failed\n", ok + 1, bad}' "$summary"
