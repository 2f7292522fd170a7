#!/bin/sh
# linattn bench --saved at a tiny shape: every op that takes an la_saved
# (the chunk forms of linear_attn, simple_gla, gla, delta_rule,
# gated_delta_rule, kda) gets a measured "saved" row, in the table and in
# the JSON, and no other op does; the fwd and fwd+bwd rows are unchanged in
# number.   usage: bench_saved.sh path/to/linattn JSON
set -u
BIN="$1"
J="$2"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
fails=0
"$BIN" bench --saved --quick --T 128 --D 32 --bh 2 --repeats 1 --no-decode --ops all \
    --json "$J" >"$out" || { echo "FAIL: bench --saved exited $?"; exit 1; }
SAVES="linear_attn-chunk simple_gla-chunk gla-chunk delta_rule-chunk gated_delta_rule-chunk kda-chunk"
for op in $SAVES; do
    # op D T pass thr wall cpu GFLOP/s %peak %pkcpu MiB: a measured row has 11 fields
    if [ "$(awk -v op="$op" '$1 == op && $4 == "saved" && NF == 11' "$out" | wc -l)" -ne 1 ]; then
        echo "FAIL: no measured saved row for $op:"
        grep "^$op " "$out"
        fails=$((fails + 1))
    fi
    if [ "$(grep -c "\"op\": \"$op\", \"D\": 32, \"T\": 128, \"backward\": true, \"saved\": true, \"threads\": 1, \"status\": \"ok\"" "$J")" -ne 1 ]; then
        echo "FAIL: no ok saved result for $op in $J"
        fails=$((fails + 1))
    fi
done
# exactly those six: no saved row for any other op
n_rows=$(awk '$4 == "saved" && NF >= 5' "$out" | wc -l)
n_json=$(grep -c '"saved": true, "threads": 1, "status"' "$J")
n_fb=$(awk '$4 == "fwd+bwd" && NF == 11' "$out" | wc -l)
n_fwd=$(awk '$4 == "fwd" && NF == 11' "$out" | wc -l)
if [ "$n_rows" -ne 6 ] || [ "$n_json" -ne 6 ] || [ "$n_fb" -ne "$n_fwd" ] || [ "$n_fb" -lt 6 ]; then
    echo "FAIL: saved rows $n_rows, saved results $n_json (want 6); fwd rows $n_fwd, fwd+bwd rows $n_fb"
    fails=$((fails + 1))
fi
[ "$fails" -eq 0 ] && echo "bench --saved: 6 saved rows, $n_fb fwd+bwd rows" 
[ "$fails" -eq 0 ]
