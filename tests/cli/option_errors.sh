#!/bin/sh
# The option parser of every subcommand (tools/util/cli_opts.c): a bad flag
# or value exits with status 2, writes nothing to stdout, and its one-line
# message names the subcommand, the option and the value. A good parse
# (--help) exits 0.   usage: option_errors.sh path/to/linattn
set -u
BIN="$1"
fails=0
n=0
err=$(mktemp) out=$(mktemp)
trap 'rm -f "$err" "$out"' EXIT
# expect EXPECTED_STDERR_LINE ARGS...
expect() {
    want="$1"
    shift
    n=$((n + 1))
    "$BIN" "$@" >"$out" 2>"$err"
    rc=$?
    got=$(cat "$err")
    if [ "$rc" -ne 2 ] || [ "$got" != "$want" ] || [ -s "$out" ]; then
        echo "FAIL: linattn $*"
        echo "  want rc 2, stderr: $want"
        echo "  got  rc $rc, stderr: $got"
        [ -s "$out" ] && echo "  and stdout: $(head -c 200 "$out")"
        fails=$((fails + 1))
    fi
}
expect "linattn check: --threads expects an integer in [0, 4096], got 'x'" check --threads x
expect "linattn check: --seed needs a value" check --seed
expect "linattn check: --seed expects a non-negative integer, got '-3'" check --seed -3
expect "linattn check: --seed expects a non-negative integer, got '12abc'" check --seed 12abc
expect "linattn check: unknown option '--frob' (see linattn check --help)" check --frob
expect "linattn check: unknown option '--frob' (see linattn check --help)" check --frob=1
expect "linattn check: unexpected argument 'extra' (see linattn check --help)" check extra
expect "linattn check: --json needs a value (got the option '--quick')" check --json --quick
expect "linattn check: --quick takes no value, got '1'" check --quick=1
expect "linattn bench: --threads expects a comma-separated list of at most 8 integers in [1, 256], got '0'" bench --threads 0
expect "linattn bench: --T expects a comma-separated list of at most 32 integers in [1, 4194304], got '1,x'" bench --T 1,x
expect "linattn bench: --budget expects a number in [0, 1e+06], got 'nan'" bench --budget nan
expect "linattn bench: --repeats needs a value" bench --repeats
expect "linattn bench: --saved takes no value, got '1'" bench --saved=1
expect "linattn bench: --saved times forward+backward of the op sweep; it cannot be combined with --fwd-only" bench --saved --fwd-only
expect "linattn bench: --saved times forward+backward of the op sweep; it cannot be combined with --scaling" bench --scaling --saved
expect "linattn bench: --saved: none of the selected ops takes an la_saved (the chunk forms of linear_attn, simple_gla, gla, delta_rule, gated_delta_rule, kda do)" bench --saved --ops softmax,linear_attn-recurrent
expect "linattn labs: --threads expects an integer in [0, 4096], got '-1'" labs --threads=-1
expect "linattn labs: unknown option '--sed' (see linattn labs --help)" labs --sed 3
expect "linattn approx: --draws expects an integer in [2, 100000], got '1'" approx --draws 1
expect "linattn approx: --json needs a value" approx --quick --json
expect "linattn train: --lr expects a number in [1e-08, 10], got '99'" train --lr 99
expect "linattn train: --steps expects an integer in [1, 100000000], got '2.5'" train --steps 2.5
expect "linattn zoo: --seed expects a non-negative integer, got '-1'" zoo --seed -1
expect "linattn zoo: --threads needs a value" zoo --threads
expect "linattn generate: --threads expects an integer in [0, 4096], got '5000'" generate --threads=5000
expect "linattn generate: --temperature expects a number in [0, 100], got 'inf'" generate --temperature inf
# --help: usage on stdout, exit 0
for cmd in check bench labs approx train zoo generate; do
    n=$((n + 1))
    if ! "$BIN" "$cmd" --help >"$out" 2>"$err" || ! grep -q "usage: linattn $cmd" "$out"; then
        echo "FAIL: linattn $cmd --help"
        fails=$((fails + 1))
    fi
done
echo "$((n - fails)) passed, $fails failed"
[ "$fails" -eq 0 ]
