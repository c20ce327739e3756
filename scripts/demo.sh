#!/usr/bin/env bash
# Quick start, step 1: install what is missing, build, run the demo service, then verify and
# decrypt its audit log with the phiaudit CLI.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
if [ ! -f build/build.ninja ]; then
  rm -rf build
  meson setup build >build.setup.log 2>&1 || { cat build.setup.log; rm -rf build; exit 1; }
fi
ninja -C build >/dev/null

out=demo-output
rm -rf "$out" && mkdir -m 700 "$out"
echo "== phiaudit keygen $out/demo.key"
build/phiaudit keygen "$out/demo.key"
echo "== clinic_demo: 4 threads, 400 patient-record accesses"
build/examples/clinic_demo "$out/demo.key" "$out/audit.log" 400
echo "== the log holds no plaintext: occurrences of 'MRN-' in $out/audit.log: $(grep -c -a 'MRN-' "$out/audit.log" || true)"
echo "== phiaudit verify --key $out/demo.key $out/audit.log"
build/phiaudit verify --key "$out/demo.key" "$out/audit.log"
echo "== phiaudit decrypt --key $out/demo.key $out/audit.log | head -n 3"
build/phiaudit decrypt --key "$out/demo.key" "$out/audit.log" >"$out/decrypted.jsonl"
head -n 3 "$out/decrypted.jsonl"
echo "   ... $(wc -l <"$out/decrypted.jsonl") records in all (stream open + 400 accesses + stream close)"
echo "== phiaudit query --key $out/demo.key --patient MRN-000228 $out/audit.log (who saw this patient?)"
build/phiaudit query --key "$out/demo.key" --patient MRN-000228 "$out/audit.log"
