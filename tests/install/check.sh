#!/usr/bin/env bash
# Installs the build into a temporary prefix, then builds a small program
# against it twice: with pkg-config (shared library) and with find_package.
set -euo pipefail
build=$1 src=$2
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
test -f "$prefix/include/linattn.h"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig:$prefix/lib64/pkgconfig:$prefix/lib/x86_64-linux-gnu/pkgconfig"
if command -v pkg-config >/dev/null 2>&1; then
  cc -std=c11 "$src/consumer.c" -o "$prefix/consumer_pc" $(pkg-config --cflags --libs linattn)
  libdir=$(pkg-config --variable=libdir linattn)
  LD_LIBRARY_PATH="$libdir" "$prefix/consumer_pc"
else
  echo "pkg-config not installed: skipping the pkg-config consumer"
fi
cmake -S "$src" -B "$prefix/cbuild" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$prefix/cbuild" >/dev/null
"$prefix/cbuild/consumer"
echo "install check: ok"
