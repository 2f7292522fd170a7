#!/usr/bin/env python3
"""A/B of two linattn libraries in one process for the delta rules
(cuda-delta7; gpu_ab.py does linear attention and simple GLA): bf16 DeltaNet
8,2048,16,128 (l2 in the kernel) and Gated DeltaNet 1,65536,H2,HV8,128,
forward and forward+backward (--fwd-only: the forward alone), the
libraries alternating (A B A B); median of 30 CUDA-event-timed calls each
(gpu_bench.timeit). Reports whether every output (o, final state) and
gradient is bitwise identical between the first library and each other one
on the same inputs, else the largest relative difference (max |a - b| / max |a|),
and with --profile per-kernel device times of one call per library
(torch.profiler). --fla: fla's chunk_delta_rule fwd and fwd+bwd at the
DeltaNet shape, last. --saved (cuda-saved7): the last library once more with
opts->saved (one la_saved reused by every call: the forward fills it, the
backward reads it), timed in the same alternation and compared bitwise with
that library without it. Per-library LINATTN_* switches: AB_ENV
(bench/ab_env.py).

    python3 bench/gpu_ab_delta.py --libs base.so,new.so [--ops delta,gdn] [--fwd-only]
                                  [--profile] [--fla] [--saved]
                                  [--shape-delta B,T,H,H,D] [--shape-gdn B,T,H,HV,D]
"""
import argparse
import ctypes
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ab_env  # noqa: E402
from gpu_bench import DT, P, Dims, GatedOpts, Lib, timeit  # noqa: E402


def inputs(op, dev, dt, shape=None):
    """shape (B, T, H, HV, D): default the bench shapes (cuda-derr16: others for dry runs)"""
    torch.manual_seed(0)
    if op == "delta":
        B, T, H, HV, D = shape or (8, 2048, 16, 16, 128)
        q = torch.randn(B, T, H, D, device=dev, dtype=dt)
        k = torch.randn(B, T, H, D, device=dev, dtype=dt)
    else:
        B, T, H, HV, D = shape or (1, 65536, 2, 8, 128)
        q = torch.nn.functional.normalize(torch.randn(B, T, H, D, device=dev), dim=-1).to(dt)
        k = torch.nn.functional.normalize(torch.randn(B, T, H, D, device=dev), dim=-1).to(dt)
    v = torch.randn(B, T, HV, D, device=dev, dtype=dt)
    do = torch.randn(B, T, HV, D, device=dev, dtype=dt)
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, HV, device=dev)).float() / 16
    beta = torch.rand(B, T, HV, device=dev).float()
    dims = Dims(B, T, H, D, D, HV if op == "gdn" else 0, None, 0, DT[dt])
    return (B, T, H, HV, D), dims, q, k, v, do, g, beta


def calls(L, op, dims, t, saved=None, form=2):  # form: LA_FORM_CHUNK (1: RECURRENT)
    R = ctypes.byref
    q, k, v, do, g, beta, o, sT, dq, dk, dv, dg, db = t
    if op == "delta":
        go = GatedOpts(form, 0.0, 64, 1, saved)
        fwd = lambda: L.ok(L.l.la_delta_rule_forward(L.ctx, R(go), R(dims), P(o), P(sT), P(q),
                                                     P(k), P(v), P(beta), None))
        bwd = lambda: L.ok(L.l.la_delta_rule_backward(L.ctx, R(go), R(dims), P(dq), P(dk), P(dv),
                                                      P(db), None, P(do), None, P(q), P(k), P(v),
                                                      P(beta), None))
    else:
        go = GatedOpts(form, 0.0, 64, 0, saved)
        fwd = lambda: L.ok(L.l.la_gated_delta_rule_forward(L.ctx, R(go), R(dims), P(o), P(sT),
                                                           P(q), P(k), P(v), P(g), P(beta), None))
        bwd = lambda: L.ok(L.l.la_gated_delta_rule_backward(L.ctx, R(go), R(dims), P(dq), P(dk),
                                                            P(dv), P(dg), P(db), None, P(do), None,
                                                            P(q), P(k), P(v), P(g), P(beta), None))
    return fwd, lambda: (fwd(), bwd())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--libs", required=True)
    ap.add_argument("--ops", default="delta,gdn")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--fwd-only", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--fla", action="store_true")
    ap.add_argument("--saved", action="store_true")
    # cuda-split9: fla's chunk_gated_delta_rule forward at the GDN shape, last
    ap.add_argument("--fla-gdn", action="store_true")
    # cuda-drsplit18: other shapes, "B,T,H,HV,D" (DeltaNet: HV = H)
    ap.add_argument("--shape-delta", default=None)
    ap.add_argument("--shape-gdn", default=None)
    a = ap.parse_args()
    dev, dt = torch.device("cuda"), torch.bfloat16
    stream = torch.cuda.current_stream().cuda_stream
    libpaths = a.libs.split(",")
    libs = [Lib(p, stream) for p in libpaths]
    saved = [None] * len(libs)
    paths = list(libpaths)  # labels of the variants timed
    if a.saved:  # the last library again, with a la_saved object
        sv = ctypes.c_void_p()
        libs[-1].ok(libs[-1].l.la_saved_create(libs[-1].ctx, ctypes.byref(sv)))
        libs.append(libs[-1])
        saved.append(sv.value)
        paths.append(libpaths[-1] + "+saved")
    name = torch.cuda.get_device_name(0)
    for op in a.ops.split(","):
        sh = getattr(a, "shape_" + op)
        shape, dims, q, k, v, do, g, beta = inputs(
            op, dev, dt, tuple(int(x) for x in sh.split(",")) if sh else None)
        B, T, H, HV, D = shape
        nh = HV if op == "gdn" else H
        outs, res = [], {}
        for L, p, svh in zip(libs, paths, saved):
            sT = torch.full((B, nh, D, D), float("nan"), device=dev)
            t = [q, k, v, do, g, beta] + [torch.full_like(v, float("nan")), sT] + [
                torch.full_like(x, float("nan")) for x in (q, k, v, g, beta)]
            fwd, fb = (ab_env.wrap(p.removesuffix("+saved"), f)
                       for f in calls(L, op, dims, t, svh))
            (fwd if a.fwd_only else fb)()
            torch.cuda.synchronize()
            outs.append([x.clone() for x in t[6:]])
            res[p] = (fwd, fb, [], [])
        names = ["o", "final state", "dq", "dk", "dv", "dg", "dbeta"]
        pairs = [("A", "B" if len(libpaths) == 2 else os.path.basename(os.path.dirname(libpaths[i])),
                  outs[0], outs[i]) for i in range(1, len(libpaths))]
        if a.saved:
            pairs.append(("B", "B+saved", outs[len(libpaths) - 1], outs[-1]))
        for la, lb, xs, ys in pairs:
            for nm, x, y in zip(names, xs, ys):
                if (op == "delta" and nm == "dg") or (a.fwd_only and nm.startswith("d")):
                    continue
                if torch.equal(ab_env.bits(x), ab_env.bits(y)):
                    print("%s %s: %s and %s bitwise identical" % (op, nm, la, lb), flush=True)
                    continue
                x, y = x.float(), y.float()
                rel = ((x - y).abs().max() / x.abs().max().clamp_min(1e-30)).item()
                print("%s %s %s-%s max rel diff %.3e (finite %s: %s)" %
                      (op, nm, la, lb, rel, lb, bool(torch.isfinite(y).all())), flush=True)
        for _ in range(a.reps):
            for p in paths:
                fwd, fb, tf, tb = res[p]
                tf.append(timeit(fwd)[0])
                if not a.fwd_only:
                    tb.append(timeit(fb)[0])
        for p in paths:
            _, _, tf, tb = res[p]
            print("%s %s bf16 %s fwd %.3f fwd+bwd %s ms (%s; runs %s / %s)" %
                  (os.path.basename(os.path.dirname(p)) + ("+saved" if p.endswith("+saved")
                                                           else ""), op, shape,
                   statistics.median(tf),
                   "%.3f" % statistics.median(tb) if tb else "-", name,
                   " ".join("%.3f" % x for x in tf), " ".join("%.3f" % x for x in tb)),
                  flush=True)
        if a.profile:
            from torch.profiler import ProfilerActivity, profile
            for p in paths:
                fb = res[p][0 if a.fwd_only else 1]
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    fb()
                    torch.cuda.synchronize()
                for ev in prof.key_averages():
                    us = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
                    if us:
                        print("  kernel %s %s: %s x%d %.1f us" %
                              (os.path.basename(os.path.dirname(p)) + ("+saved" if p.endswith(
                                  "+saved") else ""), op, ev.key[:70], ev.count, us),
                              flush=True)
        del q, k, v, do, g, beta, outs, res
        torch.cuda.empty_cache()
    if a.fla:
        from fla.ops.delta_rule import chunk_delta_rule
        B, T, H, D = 8, 2048, 16, 128
        torch.manual_seed(0)
        q, k, v, do = (torch.randn(B, T, H, D, device=dev, dtype=dt) for _ in range(4))
        beta = torch.rand(B, T, H, device=dev).to(dt)
        qr, kr, vr, br = (x.detach().clone().requires_grad_(True) for x in (q, k, v, beta))
        f = lambda: chunk_delta_rule(q, k, v, beta, use_qk_l2norm_in_kernel=True)
        fb = lambda: chunk_delta_rule(qr, kr, vr, br, use_qk_l2norm_in_kernel=True)[0].backward(do)
        for lbl, fn in (("fwd", f), ("fwd+bwd", fb)):
            try:
                ms = [timeit(fn)[0] for _ in range(2)]
                # the first timeit includes the compile / autotune (5 calls): the second counts
                print("fla chunk_delta_rule bf16 %d,%d,%d,%d %s %.3f ms (%s; runs %s)" %
                      (B, T, H, D, lbl, ms[-1], name,
                       " ".join("%.3f" % x for x in ms)), flush=True)
            except Exception as e:  # noqa: BLE001 - a refusal is a result
                print("fla chunk_delta_rule %s refused: %s" % (lbl, str(e)[-300:]), flush=True)
    if a.fla_gdn:  # cuda-split9: the inputs of inputs("gdn"), fla's layout (HV heads of q, k)
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
        (B, T, H, HV, D), _, q, k, v, do, g, beta = inputs("gdn", dev, dt)
        qf, kf = (x.repeat_interleave(HV // H, dim=2).contiguous() for x in (q, k))
        f = lambda: chunk_gated_delta_rule(qf, kf, v, g, beta, output_final_state=True)
        try:
            ms = [timeit(f)[0] for _ in range(2)]
            print("fla chunk_gated_delta_rule bf16 %d,%d,H%d->HV%d,%d fwd %.3f ms (%s; runs %s)" %
                  (B, T, H, HV, D, ms[-1], name, " ".join("%.3f" % x for x in ms)), flush=True)
        except Exception as e:  # noqa: BLE001 - a refusal is a result
            print("fla chunk_gated_delta_rule fwd refused: %s" % str(e)[-300:], flush=True)


if __name__ == "__main__":
    main()
