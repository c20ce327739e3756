#!/usr/bin/env bash
# Install the Debian 12 packages phiaudit needs to build, test and demo. Idempotent: only
# missing packages are installed (apt-get update runs only then). Needs root (or sudo).
set -euo pipefail

packages=(
  build-essential pkg-config meson ninja-build   # toolchain
  libssl-dev                                     # libcrypto >= 3.0
  libcmocka-dev                                  # unit tests
  libsqlite3-dev                                 # optional SQLite sink
  g++                                            # C++ header tests
  clang llvm libclang-rt-14-dev                  # libFuzzer target (runtime in -rt-dev)
  python3 python3-pytest python3-cryptography    # Python binding tests, cross-check
  procps time                                    # scripts and benchmarks
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
