#!/usr/bin/env python3
"""cuda-dout9: per-kernel A/B of the delta rules' output kernel and P^T dO
kernel variants inside one library, selected per call by environment
(LINATTN_CUDA_DELTA_OUT = old | d2 | (unset: d4), LINATTN_CUDA_DELTA_PTO =
old | (unset)); both are read at each launch. bf16 DeltaNet 8,2048,16,128 and
Gated DeltaNet 1,65536,H2,HV8,128 (bench/gpu_ab_delta.py's inputs), one
fwd+bwd per variant under torch.profiler, variants alternating, --reps rounds;
prints the median device time of every output / P^T dO kernel per variant,
and whether o, dq, dk, dv, dbeta (dg) are bitwise identical between
variants that differ only in the P^T dO or output kernel's depth.

    python3 bench/gpu_ab_dout.py --lib liblinattn.so [--ops delta,gdn] [--reps 3]
"""
import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_ab_delta import calls, inputs  # noqa: E402
from gpu_bench import Lib  # noqa: E402

VARIANTS = [("old/old", "old", "old"), ("d4/new", None, None), ("d2/new", "d2", None)]


def setenv(k, v):
    if v is None:
        os.environ.pop(k, None)
    else:
        os.environ[k] = v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--ops", default="delta,gdn")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    from torch.profiler import ProfilerActivity, profile
    dev, dt = torch.device("cuda"), torch.bfloat16
    L = Lib(a.lib, torch.cuda.current_stream().cuda_stream)
    name = torch.cuda.get_device_name(0)
    for op in a.ops.split(","):
        shape, dims, q, k, v, do, g, beta = inputs(op, dev, dt)
        B, T, H, HV, D = shape
        nh = HV if op == "gdn" else H
        t = [q, k, v, do, g, beta] + [torch.full_like(v, float("nan")),
                                      torch.full((B, nh, D, D), float("nan"), device=dev)] + [
            torch.full_like(x, float("nan")) for x in (q, k, v, g, beta)]
        _, fb = calls(L, op, dims, t)
        times, outs = {}, {}
        for r in range(a.reps):
            for lbl, eo, ep in VARIANTS:
                setenv("LINATTN_CUDA_DELTA_OUT", eo)
                setenv("LINATTN_CUDA_DELTA_PTO", ep)
                fb()
                torch.cuda.synchronize()
                if r == 0:
                    outs[lbl] = [x.clone() for x in t[6:]]
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    fb()
                    torch.cuda.synchronize()
                for ev in prof.key_averages():
                    if "dc_out" in ev.key or "dcb_pto" in ev.key:
                        us = getattr(ev, "device_time_total", None) or getattr(
                            ev, "cuda_time_total", 0)
                        times.setdefault((lbl, ev.key[:60]), []).append(us)
        setenv("LINATTN_CUDA_DELTA_OUT", None)
        setenv("LINATTN_CUDA_DELTA_PTO", None)
        for (lbl, kn), us in times.items():
            print("%s %s %s: %-8s %s median %.1f us (runs %s)" %
                  (name, op, shape, lbl, kn, statistics.median(us),
                   " ".join("%.1f" % x for x in us)), flush=True)
        names = ["o", "final state", "dq", "dk", "dv", "dg", "dbeta"]
        ref = outs["d4/new"]
        for lbl in outs:
            if lbl == "d4/new":
                continue
            for nm, x, y in zip(names, ref, outs[lbl]):
                if op == "delta" and nm == "dg":
                    continue
                same = torch.equal(x.view(torch.int16 if x.element_size() == 2 else torch.int32),
                                   y.view(torch.int16 if y.element_size() == 2 else torch.int32))
                if same:
                    print("%s %s: d4/new and %s bitwise identical" % (op, nm, lbl))
                else:
                    xf, yf = x.float(), y.float()
                    rel = ((xf - yf).abs().max() / xf.abs().max().clamp_min(1e-30)).item()
                    print("%s %s: d4/new vs %s max rel diff %.3e (finite %s)" %
                          (op, nm, lbl, rel, bool(torch.isfinite(yf).all())))
        del q, k, v, do, g, beta, t, outs
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
