#!/bin/sh
# Exported-symbol check: the dynamic symbols the shared library defines must be exactly the
# list tracked in src/phiaudit.exports (one name per line, sorted). A new public function
# must be added there on purpose; a symbol that disappears breaks the ABI (soname bump).
#   check_symbols.sh LIBRARY EXPORTS_FILE
set -eu
lib=$1
exports=$2
command -v nm >/dev/null 2>&1 || { echo "nm not found: skipping"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Defined dynamic symbols, without the version suffix; drop the version-node definition
# itself (PHIAUDIT_0, an absolute symbol) and anything not a function/object.
nm -D --defined-only "$lib" | awk '$2 ~ /^[TDRBVW]$/ { sub(/@.*/, "", $3); print $3 }' \
    | LC_ALL=C sort -u > "$tmp/actual"
grep -v '^[[:space:]]*\(#\|$\)' "$exports" > "$tmp/expected"
if ! LC_ALL=C sort -c "$tmp/expected" 2>/dev/null; then
    echo "FAIL: $exports is not sorted (LC_ALL=C sort)"; exit 1
fi
# Every export must carry the project prefix.
if grep -v '^phiaudit_' "$tmp/actual"; then
    echo "FAIL: exported symbols above lack the phiaudit_ prefix"; exit 1
fi
if ! diff -u "$tmp/expected" "$tmp/actual" > "$tmp/diff"; then
    echo "FAIL: exported symbols differ from $exports ('+' = exported but not listed,"
    echo "'-' = listed but not exported):"
    tail -n +3 "$tmp/diff" | grep '^[+-]'
    exit 1
fi
# Symbols must be versioned with the PHIAUDIT_0 node of src/phiaudit.sym.
if nm -D --defined-only "$lib" | awk '$2 ~ /^[TDRBVW]$/' | grep -v '@@PHIAUDIT_0$' ; then
    echo "FAIL: symbols above are not in version node PHIAUDIT_0"; exit 1
fi
echo "OK: $(wc -l < "$tmp/actual") exported symbols match $exports"
