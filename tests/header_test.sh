#!/usr/bin/env bash
# Every public header compiles on its own, as C11 and as C++17, warning-free.
# usage: header_test.sh INCLUDE_DIR
set -euo pipefail
inc=$1
pass=0 fail=0
for h in "$inc"/*.h "$inc"/*.hpp; do
  name=$(basename "$h")
  langs=(c++)
  [[ $name == *.h ]] && langs=(c c++)
  for lang in "${langs[@]}"; do
    if [ "$lang" = c ]; then std=(-std=c11); cc=cc; else std=(-std=c++17); cc=c++; fi
    if printf '#include "%s"\n' "$name" |
      "$cc" "${std[@]}" -Wall -Wextra -Werror -pedantic -fsyntax-only -I"$inc" -x "$lang" -; then
      pass=$((pass + 1))
    else
      echo "FAILED: $name as $lang"
      fail=$((fail + 1))
    fi
  done
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
