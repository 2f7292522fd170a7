#!/bin/sh
# Builds bench/trsm_ab.c for one ISA's kernel file: OLD = that file at a git
# revision, NEW = the working tree's, compiled as the library compiles it
# (-O3, the FP flags) under two table names, linked with build/liblinattn.a
# (configure and build linattn_static first; the table's helpers and the
# blocked solves come from there). cpu-trsm24.
#   bench/trsm_ab.sh REV [avx512|avx2] [OUT]   then   OUT [samples] [fresh] [n r]...
set -eu
rev=$1 isa=${2:-avx512} out=${3:-build/trsm_ab}
root=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$root" show "$rev:src/kernels/$isa.c" >"$tmp/old.c"
flags="-O3 -DNDEBUG -std=c11 -ffp-contract=off -fno-fast-math -I$root/src -I$root/src/kernels -I$root/include -I$root/bench"
for v in old new; do
    src=$tmp/old.c
    [ "$v" = new ] && src=$root/src/kernels/$isa.c
    # avx2.c's transpose is global too: renamed with its table
    rename=
    [ "$isa" = avx2 ] && rename=-Dla__transpose_avx2=la__transpose_avx2_$v
    ${CC:-gcc} $flags -c "$src" -Dla__kernels_$isa=trsm_ab_$v $rename -o "$tmp/$v.o"
done
${CC:-gcc} $flags "$root/bench/trsm_ab.c" "$tmp/old.o" "$tmp/new.o" "$root/build/liblinattn.a" \
    -lm -lpthread -o "$out"
echo "$out"
