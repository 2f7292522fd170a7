#!/usr/bin/env python3
"""cuda-dcg24: combine test_cuda_ops' worst16 lines (LINATTN_CUDA_TEST_WORST=1)
over shard logs: the worst 16-bit delta error per (mode, quantity), and the
failure count. usage: python3 bench/gpu_worst16.py LOG..."""
import re
import sys

W = {}
fails = passed = 0
for f in sys.argv[1:]:
    for l in open(f, errors="replace"):
        m = re.match(r"worst16 (\S+)\s+(\S+)\s+(\S+)\s+\((.*)\)", l)
        if m:
            k = (m.group(1), m.group(2)); e = float(m.group(3))
            if k not in W or e > W[k][0]: W[k] = (e, m.group(4))
        m = re.search(r"(\d+) passed, (\d+) failed", l)
        if m: passed += int(m.group(1)); fails += int(m.group(2))
modes = sorted({k[0] for k in W})
whats = ["o", "final", "dq", "dk", "dv", "dbeta", "dg", "d_init"]
print("passed %d failed %d" % (passed, fails))
print("%-8s " % "mode" + " ".join("%9s" % w for w in whats))
for md in modes:
    print("%-8s " % md + " ".join("%9s" % ("%.3e" % W[(md, w)][0] if (md, w) in W else "-") for w in whats))
for md in modes:
    for w in whats:
        if (md, w) in W:
            print("  %s %s %.3e %s" % (md, w, W[(md, w)][0], W[(md, w)][1]))
