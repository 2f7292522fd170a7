#!/usr/bin/env python3
"""Worst error against the float64 oracle per output, from test_cuda_ops logs
run with LINATTN_CUDA_TEST_BOUNDS=1 (cuda-gdn24): every line
"  <case> <output> rel RMS <e> bound <b>" counts; per output name (o,
state, dq, ...) the largest e and the largest e / b with their cases, for
each group of logs, side by side.

    python3 bench/gpu_err_bounds.py old=t_old_*.log new=t_new_*.log [--match bf16]
"""
import glob
import re
import sys

LINE = re.compile(r"^\s+(.+?)\s+(\S+)\s+rel RMS (\S+)(?: NON-FINITE)? bound (\S+)\s*$")


def worst(paths, match):
    w = {}  # name -> [max e, case, max ratio, case, count]
    for path in paths:
        for line in open(path, errors="replace"):
            m = LINE.match(line)
            if not m or (match and match not in m.group(1)):
                continue
            case, name, e, b = m.group(1), m.group(2), float(m.group(3)), float(m.group(4))
            r = e / b if b > 0 else float("inf")
            x = w.setdefault(name, [-1.0, "", -1.0, "", 0])
            x[4] += 1
            if e > x[0]:
                x[0], x[1] = e, case
            if r > x[2]:
                x[2], x[3] = r, case
    return w


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    match = None
    if "--match" in sys.argv:
        match = sys.argv[sys.argv.index("--match") + 1]
        args = [a for a in args if a != match]
    groups = []
    for a in args:
        label, pat = a.split("=", 1)
        paths = sorted(p for g in pat.split(",") for p in glob.glob(g))
        groups.append((label, worst(paths, match)))
    names = sorted({n for _, w in groups for n in w})
    print("worst error against float64 per output (e / bound: largest ratio)")
    print("%-9s " % "output" + " | ".join("%-44s" % lab for lab, _ in groups))
    for n in names:
        cells = []
        for _, w in groups:
            x = w.get(n)
            cells.append("-" if not x else "%.3e (%.2f of bound) n=%d" % (x[0], x[2], x[4]))
        print("%-9s " % n + " | ".join("%-44s" % c for c in cells))
    for lab, w in groups:
        for n in names:
            x = w.get(n)
            if x:
                print("  %s %s: worst e in '%s'; worst ratio in '%s'" % (lab, n, x[1], x[3]))


if __name__ == "__main__":
    main()
