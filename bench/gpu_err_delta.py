#!/usr/bin/env python3
"""Error of the bf16 CUDA delta rules' forward and backward at the bench
shapes (cuda-derr16; gpu_err64.py does linear attention): per library and
output (o, final state, dq, dk, dv, dg (GDN), dbeta), rel RMS =
RMS(x - ref) / RMS(ref) and max |x - ref| / max |ref|, on gpu_ab_delta.py's
inputs (DeltaNet 8,2048,16,128 with l2 in the kernel; Gated DeltaNet
1,65536,H2,HV8,128; chunk form, chunk 64).

The reference is a CPU context (--threads, default all cores) of the same
library (or of --ref-lib for all) run in float32 on the same bf16 inputs
promoted to float32, chunk form. The CPU backend is exact to float32
rounding: tests/test_*.c check it against the float64 oracle at odd sizes.
A float64 recurrence at T = 65536 would be too heavy; the float32
reference's own error is far below the bf16 kernels' (~1e-3). The CPU
work is parallel over (sequence, value head) pairs: 8 at the GDN shape, so
8 cores are busy there whatever --threads says. Each reference's wall time
is printed.

    python3 bench/gpu_err_delta.py --libs base.so,new.so [--ops delta,gdn]
        [--ref-lib cpu.so] [--threads N] [--shapes "gdn=1,4096,2,8,128;delta=2,256,4,4,64"]
    # no GPU (dry run): the candidate is the CPU context in the recurrent form
    python3 bench/gpu_err_delta.py --libs build/liblinattn.so --dry-run --shapes ...
"""
import argparse
import ctypes
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ab_env  # noqa: E402
from gpu_ab_delta import calls, inputs  # noqa: E402
from gpu_bench import Lib  # noqa: E402

NAMES = ["o", "final state", "dq", "dk", "dv", "dg", "dbeta"]


class CpuLib(Lib):
    def __init__(self, path, threads):  # a CPU context (Lib.__init__ makes a CUDA one)
        self.l = ctypes.CDLL(path)
        self.l.la_last_error.restype = ctypes.c_char_p
        self.l.la_ctx_threads.argtypes = [ctypes.c_void_p]
        self.ctx = ctypes.c_void_p()
        self.ok(self.l.la_ctx_create(ctypes.byref(self.ctx), threads))


def run(L, op, dims, x, dev, form=2, path=None):
    """o, final state, dq, dk, dv, dg, dbeta of one forward + backward of
    library context L on inputs x = (q, k, v, do, g, beta) moved to dev,
    outputs NaN-poisoned first."""
    B, K, V, HV = dims.B, dims.K, dims.V, dims.HV or dims.H
    x = [t.to(dev) for t in x]
    sT = torch.full((B, HV, K, V), float("nan"), device=dev)
    t = x + [torch.full_like(x[2], float("nan")), sT] + [
        torch.full_like(y, float("nan")) for y in (x[0], x[1], x[2], x[4], x[5])]
    fb = calls(L, op, dims, t, form=form)[1]
    (ab_env.wrap(path, fb) if path else fb)()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return t[6:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--libs", required=True)
    ap.add_argument("--ops", default="delta,gdn")
    ap.add_argument("--shapes", default="", help='e.g. "gdn=1,4096,2,8,128;delta=2,256,4,4,64" '
                    "(B,T,H,HV,D; default the bench shapes)")
    ap.add_argument("--ref-lib", default="", help="one library's CPU context for every reference")
    ap.add_argument("--threads", type=int, default=0, help="CPU context threads (0: all cores)")
    ap.add_argument("--dry-run", action="store_true",
                    help="no GPU: the candidate is the CPU context in the recurrent form")
    a = ap.parse_args()
    shapes = {k: tuple(int(v) for v in s.split(","))
              for k, s in (x.split("=") for x in a.shapes.split(";") if x)}
    dev = torch.device("cpu" if a.dry_run else "cuda")
    paths = a.libs.split(",")
    cuda = {} if a.dry_run else {p: Lib(p, torch.cuda.current_stream().cuda_stream) for p in paths}
    cpu = {}
    print("torch %s, %s, %d CPU cores" % (torch.__version__, "dry run (CPU)" if a.dry_run else
                                            torch.cuda.get_device_name(0), os.cpu_count()),
          flush=True)
    for op in a.ops.split(","):
        shape, dims, *x = inputs(op, dev, torch.bfloat16, shapes.get(op))
        dims32 = type(dims).from_buffer_copy(dims)
        dims32.dtype = 0  # LA_DTYPE_F32: the CPU backend's
        x32 = [t.float().cpu() for t in x]
        refs = {}
        for p in paths:
            rp = a.ref_lib or p
            if rp not in refs:
                if rp not in cpu:
                    cpu[rp] = CpuLib(rp, a.threads)
                t0 = time.time()
                refs[rp] = run(cpu[rp], op, dims32, x32, torch.device("cpu"))
                print("%s %s reference (%s CPU, float32, %d threads): %.1f s" %
                      (op, shape, rp, cpu[rp].l.la_ctx_threads(cpu[rp].ctx), time.time() - t0),
                      flush=True)
            if a.dry_run:
                outs = run(cpu[rp], op, dims32, x32, dev, form=1)
            else:
                outs = run(cuda[p], op, dims, x, dev, path=p)
            for nm, y, r in zip(NAMES, outs, refs[rp]):
                if op == "delta" and nm == "dg":
                    continue
                r = r.to(dev, torch.float64)
                d = y.double() - r
                rms = (d.pow(2).mean().sqrt() / r.pow(2).mean().sqrt()).item()
                mx = (d.abs().max() / r.abs().max()).item()
                print("%s %s %s %s %-11s rel RMS %.3e  max|d|/max|ref| %.3e%s" %
                      (p, op, "CPU recurrent" if a.dry_run else "bf16", shape, nm, rms, mx,
                       "" if torch.isfinite(y).all() else "  NON-FINITE"), flush=True)
                del d, r
        if len(refs) > 1:  # the libraries' CPU references: same bits?
            rs = list(refs.values())
            same = all(torch.equal(ab_env.bits(u), ab_env.bits(w))
                       for r in rs[1:] for u, w in zip(rs[0], r))
            print("%s: CPU references of %s bitwise identical: %s" % (op, ",".join(refs), same),
                  flush=True)
        del x, x32, refs
        if not a.dry_run:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
