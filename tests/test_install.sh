#!/bin/sh
# External-consumer test: configure, build and `meson install` phiaudit into a temporary
# prefix, then build tiny C and C++ programs against the *installed* copy using only
# `pkg-config phiaudit`, run them, and import the installed Python package.
#   test_install.sh SOURCE_ROOT [MESON [NINJA]]
# Exit 77 (skip) when a required tool is missing.
set -eu
src=$1
meson=${2:-meson}
ninja=${3:-ninja}
for tool in "$meson" "$ninja" pkg-config cc; do
    command -v "$tool" >/dev/null 2>&1 || { echo "SKIP: $tool not found"; exit 77; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/phiaudit-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

echo "== configure + build + install into $prefix"
"$meson" setup "$tmp/build" "$src" --prefix="$prefix" -Dtests=disabled \
    --wrap-mode=nodownload > "$tmp/setup.log" 2>&1 || { cat "$tmp/setup.log"; exit 1; }
"$ninja" -C "$tmp/build" > "$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
"$meson" install -C "$tmp/build" --no-rebuild > "$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log"; exit 1; }

pcfile=$(find "$prefix" -name phiaudit.pc | head -n 1)
[ -n "$pcfile" ] || { echo "FAIL: phiaudit.pc not installed"; exit 1; }
PKG_CONFIG_PATH=$(dirname "$pcfile")
export PKG_CONFIG_PATH
libdir=$(pkg-config --variable=libdir phiaudit)
includedir=$(pkg-config --variable=includedir phiaudit)
echo "pkg-config: cflags='$(pkg-config --cflags phiaudit)' libs='$(pkg-config --libs phiaudit)'"

# Installed artefacts.
for h in phiaudit.h phiaudit_sink.h phiaudit_record.h; do
    [ -f "$includedir/$h" ] || { echo "FAIL: $includedir/$h not installed"; exit 1; }
done
[ -e "$libdir/libphiaudit.so.0" ] || { echo "FAIL: versioned soname libphiaudit.so.0 missing"; exit 1; }
soname=$(objdump -p "$libdir/libphiaudit.so" 2>/dev/null | awk '/SONAME/ { print $2 }')
[ -z "$soname" ] || [ "$soname" = libphiaudit.so.0 ] ||
    { echo "FAIL: SONAME is '$soname'"; exit 1; }

# Installed text files (.pc, headers, Python) must not reference the build directory
# (binaries may: debug info records the compilation directory).
if grep -rlI "$tmp/build" "$prefix" 2>/dev/null; then
    echo "FAIL: installed files above reference the build directory"; exit 1
fi

echo "== C consumer"
cat > "$tmp/consumer.c" <<'C'
#include <phiaudit.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    static const uint8_t key[32] = {1, 2, 3}, key_id[16] = {4, 5, 6};
    phiaudit_sink *mem = NULL;
    phiaudit_logger *lg = NULL;
    phiaudit_keyring *kr = NULL;
    if (phiaudit_sink_memory_open(&mem) != 0)
        return 1;
    phiaudit_config cfg;
    phiaudit_config_init(&cfg);
    cfg.app_name = "consumer";
    cfg.key = key;
    cfg.key_id = key_id;
    cfg.sinks = &mem;
    cfg.sink_count = 1;
    if (phiaudit_logger_open(&lg, &cfg) != 0) {
        fprintf(stderr, "open: %s\n", phiaudit_logger_errmsg(NULL));
        return 1;
    }
    phiaudit_scope *s = NULL;
    if (phiaudit_scope_begin(&s, lg, "dr-1", "p-1", PHIAUDIT_ACTION_READ) != 0)
        return 1;
    if (phiaudit_scope_end(&s, PHIAUDIT_OUTCOME_SUCCESS) != 0 || phiaudit_logger_close(&lg) != 0)
        return 1;
    if (phiaudit_keyring_new(&kr) != 0 || phiaudit_keyring_add(kr, key_id, key) != 0)
        return 1;
    uint8_t frame[PHIAUDIT_MAX_FRAME_LEN], pt[PHIAUDIT_MAX_FRAME_LEN];
    size_t len = sizeof frame, ptlen = 0;
    if (phiaudit_sink_memory_count(mem) != 3 ||
        phiaudit_sink_memory_get(mem, 1, frame, &len) != 0 ||
        phiaudit_frame_open(kr, frame, len, pt, sizeof pt - 1, &ptlen) != 0)
        return 1;
    pt[ptlen] = 0;
    if (!strstr((char *)pt, "\"patient\":\"p-1\""))
        return 1;
    phiaudit_keyring_free(&kr);
    phiaudit_sink_close(&mem);
    printf("consumer OK, libphiaudit %s\n", phiaudit_version());
    return 0;
}
C
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror -o "$tmp/consumer" "$tmp/consumer.c" \
    $(pkg-config --cflags --libs phiaudit)
# Build-directory isolation: the program must run against the installed library.
LD_LIBRARY_PATH=$libdir "$tmp/consumer"
if command -v ldd >/dev/null 2>&1; then
    LD_LIBRARY_PATH=$libdir ldd "$tmp/consumer" | grep -q "$libdir/libphiaudit.so.0" ||
        { echo "FAIL: consumer did not resolve the installed libphiaudit"; exit 1; }
fi

echo "== static link (pkg-config --static)"
cc -std=c11 -o "$tmp/consumer_static" "$tmp/consumer.c" \
    $(pkg-config --cflags phiaudit) "$libdir/libphiaudit.a" \
    $(pkg-config --static --libs libcrypto) -lpthread
"$tmp/consumer_static"

if [ -f "$includedir/phiaudit.hpp" ] && command -v c++ >/dev/null 2>&1; then
    echo "== C++ consumer (phiaudit.hpp)"
    cat > "$tmp/consumer.cpp" <<'CPP'
#include <phiaudit.hpp>
#include <cstdio>
int main()
{
    phiaudit::Sink mem = phiaudit::Sink::memory();
    phiaudit::Config cfg;
    std::array<uint8_t, PHIAUDIT_KEY_ID_LEN> kid{7};
    std::array<uint8_t, PHIAUDIT_KEY_LEN> key{8};
    cfg.app_name("cpp-consumer").key(kid, key).sink(mem);
    phiaudit::Logger lg(cfg);
    { phiaudit::Scope s(lg, "dr-1", "p-1"); }
    lg.close();
    std::printf("C++ consumer OK, %zu frames\n", mem.count());
    return mem.count() == 3 ? 0 : 1;
}
CPP
    # shellcheck disable=SC2046
    c++ -std=c++17 -Wall -Wextra -Werror -o "$tmp/consumer_cpp" "$tmp/consumer.cpp" \
        $(pkg-config --cflags --libs phiaudit)
    LD_LIBRARY_PATH=$libdir "$tmp/consumer_cpp"
else
    echo "(phiaudit.hpp not installed or no C++ compiler: C++ consumer skipped)"
fi

if [ -x "$prefix/bin/phiaudit" ]; then
    echo "== installed CLI"
    LD_LIBRARY_PATH=$libdir "$prefix/bin/phiaudit" --version
fi

pyinit=$(find "$prefix" -path '*/phiaudit/__init__.py' | head -n 1)
if [ -n "$pyinit" ] && [ -x /usr/bin/python3 ]; then
    echo "== installed Python package (no PHIAUDIT_LIBRARY, no LD_LIBRARY_PATH)"
    pydir=$(dirname "$(dirname "$pyinit")")
    env -u PHIAUDIT_LIBRARY -u LD_LIBRARY_PATH PYTHONPATH="$pydir" PYTHONDONTWRITEBYTECODE=1 \
        /usr/bin/python3 - "$libdir" <<'PY'
import os, sys
import phiaudit
from phiaudit import _lib
from phiaudit.testing import assert_single_access
with phiaudit.Logger.for_testing() as lg:
    with lg.scope("dr-1", "p-1", "R"):
        pass
    assert_single_access(lg.records(), patient="p-1", clinician="dr-1")
loaded = os.path.realpath(_lib.lib_path())
assert loaded.startswith(os.path.realpath(sys.argv[1])), loaded
print("python package OK:", phiaudit.library_version(), "from", _lib.lib_path())
PY
else
    echo "(Python package not installed: skipped)"
fi
echo "OK: install test passed"
