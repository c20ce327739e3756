#!/usr/bin/env bash
# Compile and run the C example from README.md exactly as printed there.
# usage: readme_example_test.sh SOURCE_ROOT BUILD_ROOT PHIAUDIT_CLI [B_SANITIZE]
set -euo pipefail
src=$1 build=$2 cli=$3 sanitize=${4:-none}
san_flags=()
[ "$sanitize" = none ] || san_flags=("-fsanitize=$sanitize")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
awk '/^```c$/{on=1; next} /^```$/{if (on) exit} on' "$src/README.md" > "$tmp/example.c"
[ -s "$tmp/example.c" ] || { echo "no C example found in README.md"; exit 1; }
cc -std=c11 -Wall -Wextra -Werror "${san_flags[@]}" -I"$src/include" "$tmp/example.c" -o "$tmp/example" \
  -L"$build" -Wl,-rpath,"$build" -lphiaudit
"$cli" keygen "$tmp/k" >/dev/null
"$tmp/example" "$tmp/k" "file:$tmp/audit.pha"
n=$(grep -a -c 'MRN-0042' "$tmp/audit.pha" || true)
[ "$n" = 0 ] || { echo "patient ID found in plaintext"; exit 1; }
[ -s "$tmp/audit.pha" ] || { echo "no records written"; exit 1; }
"$cli" verify --key "$tmp/k" "$tmp/audit.pha" >/dev/null
echo "1 passed, 0 failed"
