#!/usr/bin/env python3
"""Worst error against float64 per (op, dtype, output) over test_cuda_ops
logs, old vs new (cuda-s2p24): reads the "rel RMS ... (bound ...)" lines
that every cmp() of tests/test_cuda_ops.c prints (an old binary's lines may
lack the bound: taken from the new log's line of the same case and output),
for the 16-bit cases (bf16 / fp16 in the case name) whose names contain
--match (default: every op; the op is the case name's first word).

    python3 bench/err_worst.py --old 'base_*.log' --new 'new_*.log' [--match bf16] [--half]

Prints, per (op, dtype, output): old worst, new worst, the bound, new worst
/ bound, the case of the new worst, and the largest new / old ratio of one
case; --half: exit status 1 unless every new worst is under half its bound.
"""
import argparse
import glob
import re

LINE = re.compile(r"^  (.*?)\s+(\S+)\s+rel RMS (\S+)(?: \(bound (\S+)\))?")


def read(pattern, match):
    errs, bounds = {}, {}
    for fn in sorted(glob.glob(pattern)):
        for line in open(fn, errors="replace"):
            if "GPU vs CPU" in line:
                continue
            m = LINE.match(line)
            if not m:
                continue
            case, out, e, b = m.group(1).strip(), m.group(2), float(m.group(3)), m.group(4)
            if match and match not in case:
                continue
            dt = "bf16" if "bf16" in case else "fp16" if "fp16" in case else None
            if dt is None:
                continue
            if e != e:  # a NaN error must not vanish in max()
                e = float("inf")
            key = (case, out)
            errs[key] = max(errs.get(key, 0.0), e)
            if b:
                bounds[key] = float(b)
    return errs, bounds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--half", action="store_true")
    ap.add_argument("--match", default=None)
    a = ap.parse_args()
    old, _ = read(a.old, a.match)
    new, bounds = read(a.new, a.match)
    groups = {}
    for (case, out), e in new.items():
        op = case.split()[0]
        dt = "bf16" if "bf16" in case else "fp16"
        g = groups.setdefault((op, dt, out), {"new": (0.0, ""), "old": 0.0, "ratio": 0.0, "n": 0})
        g["n"] += 1
        if e >= g["new"][0]:
            g["new"] = (e, case)
        o = old.get((case, out))
        if o is not None:
            g["old"] = max(g["old"], o)
            if o > 0:
                g["ratio"] = max(g["ratio"], e / o)
        g["bound"] = bounds.get((case, out), float("nan"))
    ok = True
    print("%-6s %-4s %-9s %4s %10s %10s %9s %6s %7s  %s" %
          ("op", "dt", "output", "n", "old worst", "new worst", "bound", "new/bd", "max n/o", "case of new worst"))
    for (op, dt, out), g in sorted(groups.items()):
        e, case = g["new"]
        frac = e / g["bound"]
        ok &= frac < 0.5
        print("%-6s %-4s %-9s %4d %10.3e %10.3e %9.1e %6.3f %7.3f  %s" %
              (op, dt, out, g["n"], g["old"], e, g["bound"], frac, g["ratio"], case))
    print("every new worst under half its bound: %s (%d cases new, %d old)" %
          (ok, len(new), len(old)))
    return 0 if ok or not a.half else 1


if __name__ == "__main__":
    raise SystemExit(main())
