#!/usr/bin/env python3
"""Times linattn's CUDA backend and fla (flash-linear-attention) side by side
on one GPU, in one process, on torch tensors and torch's stream.

    PYTHONPATH=<fla checkout> python3 bench/gpu_bench.py [--lib build/liblinattn.so]
        [--out results.jsonl] [--quick]

Each number is the median of >= 30 CUDA-event-timed calls after warm-up
(5 calls for anything slower than 50 ms per call). fwd+bwd: our forward call
plus our backward call (which recomputes the states it needs); fla: its
autograd forward and .backward(). fla failures (e.g. its Hopper guard on the
backward) are recorded as 'refused: <message>'. Results go to stdout and, as
JSON lines, to --out."""
import argparse
import ctypes
import json
import math
import os
import statistics
import sys
import time

import torch

c_i64, c_int, c_float, c_void_p = ctypes.c_int64, ctypes.c_int, ctypes.c_float, ctypes.c_void_p


class Dims(ctypes.Structure):
    _fields_ = [("B", c_i64), ("T", c_i64), ("H", c_i64), ("K", c_i64), ("V", c_i64),
                ("HV", c_i64), ("cu_seqlens", c_void_p), ("n_seqs", c_i64), ("dtype", c_int)]


class GatedOpts(ctypes.Structure):
    _fields_ = [("form", c_int), ("scale", c_float), ("chunk_size", c_i64),
                ("use_qk_l2norm", c_int), ("saved", ctypes.c_void_p)]  # la_saved *, NULL


class LinOpts(ctypes.Structure):
    _fields_ = [("feature_map", c_int), ("causal", c_int), ("form", c_int), ("normalize", c_int),
                ("eps", c_float), ("scale", c_float), ("chunk_size", c_i64),
                ("saved", ctypes.c_void_p)]  # la_saved *, NULL (cpu-saved16 added it)


class DecCfg(ctypes.Structure):
    _fields_ = [("op", c_int), ("N", c_i64), ("H", c_i64), ("HV", c_i64), ("K", c_i64),
                ("V", c_i64), ("feature_map", c_int), ("normalize", c_int), ("eps", c_float),
                ("scale", c_float), ("use_qk_l2norm", c_int)]


DT = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
P = lambda t: c_void_p(t.data_ptr()) if t is not None else None


class Lib:
    def __init__(self, path, stream):
        self.l = ctypes.CDLL(path)
        self.l.la_last_error.restype = ctypes.c_char_p
        self.ctx = c_void_p()
        self.ok(self.l.la_ctx_create_cuda(ctypes.byref(self.ctx), 0, c_void_p(stream)))

    def ok(self, st):
        if st != 0:
            raise RuntimeError("linattn status %d: %s" % (st, self.l.la_last_error().decode()))


def timeit(fn, iters=30, warmup=3):
    t0 = time.time()
    fn()
    torch.cuda.synchronize()
    first = time.time() - t0
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    if first > 0.05:
        iters = 5
    evs = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        evs.append((s, e))
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in evs), iters


RESULTS = []
COPY_TBPS = []  # measured device copy bandwidth of this run (TB/s)


def record(out, **kw):
    RESULTS.append(kw)
    print(json.dumps(kw), flush=True)
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(kw) + "\n")


def attempt(out, base, fn, iters=30):
    try:
        ms, n = timeit(fn, iters)
        record(out, **base, ms=round(ms, 4), calls=n)
    except Exception as e:  # noqa: BLE001 - a refusal is a result
        msg = str(e).strip().splitlines()
        record(out, **base, ms=None, note="refused: " + (msg[-1] if msg else type(e).__name__)[:200])
    torch.cuda.synchronize()


def profile_kernels(out, base, op, fn):
    """Device time of each kernel in one call of fn (after a warm-up call)."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    for ev in prof.key_averages():
        us = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if us:
            record(out, **base, op=op, impl="linattn", mode="kernel", kernel=ev.key[:90],
                   count=ev.count, us=round(us, 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default="build/liblinattn.so")
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-fla", action="store_true")
    ap.add_argument("--fla-ops", default="lin,sgla",
                    help="dense shapes: fla ops to time (its Triton compiles take minutes)")
    ap.add_argument("--sections", default="copy,dense,delta,gdn,step",
                    help="comma list of copy, dense, delta, gdn, step")
    ap.add_argument("--shapes", default="0,1,2", help="indices of the dense shapes to run")
    ap.add_argument("--dtypes", default="bf16,fp32", help="dense shapes: dtypes, outer loop")
    ap.add_argument("--profile", action="store_true",
                    help="dense shapes: per-kernel times of one linattn fwd+bwd (torch.profiler)")
    # cuda-delta3: narrower delta/gdn runs (device calls are time-limited)
    ap.add_argument("--delta-dtypes", default="bf16,fp32", help="delta and gdn sections: dtypes")
    ap.add_argument("--delta-shapes", default="0,1", help="delta section: shape indices")
    ap.add_argument("--no-recurrent", action="store_true", help="gdn: skip the recurrent form")
    a = ap.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    stream = torch.cuda.current_stream().cuda_stream
    L = Lib(a.lib, stream)
    print("GPU:", torch.cuda.get_device_name(0), "torch", torch.__version__, flush=True)
    fla = None
    if not a.skip_fla:
        try:
            import fla as fla_mod
            from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule
            from fla.ops.linear_attn import chunk_linear_attn
            from fla.ops.simple_gla import chunk_simple_gla
            from fla.ops.delta_rule import chunk_delta_rule
            fla = dict(version=fla_mod.__version__, lin=chunk_linear_attn, sgla=chunk_simple_gla,
                       delta=chunk_delta_rule,
                       gdn=chunk_gated_delta_rule, gdn_step=fused_recurrent_gated_delta_rule)
            print("fla", fla["version"], flush=True)
        except Exception as e:  # noqa: BLE001
            print("fla not importable:", e, flush=True)

    sec = set(a.sections.split(","))
    # device copy bandwidth (bytes read + written)
    if "copy" in sec:
        x = torch.empty(256 * 2**20, device=dev, dtype=torch.float32).normal_()
        y = torch.empty_like(x)
        ms, _ = timeit(lambda: y.copy_(x))
        bw = 2 * x.numel() * 4 / (ms * 1e-3) / 1e12
        record(a.out, what="copy", bytes=2 * x.numel() * 4, ms=round(ms, 4), TBps=round(bw, 3))
        COPY_TBPS.append(bw)
        del x, y

    go = GatedOpts(2, 0.0, 64, 0)
    lo = LinOpts(0, 1, 2, 0, 1e-6, 0.0, 64)
    shapes = [(8, 2048, 16, 128), (1, 16384, 16, 128), (4, 4096, 64, 128)]
    shapes = [shapes[int(i)] for i in a.shapes.split(",")] if "dense" in sec else []
    if a.quick:
        shapes = shapes[:1]
    dts = [dict(bf16=torch.bfloat16, fp32=torch.float32, fp16=torch.float16)[x]
           for x in a.dtypes.split(",")]
    for dt in dts:
        for (B, T, H, D) in shapes:
            q = torch.randn(B, T, H, D, device=dev, dtype=dt)
            k = torch.randn(B, T, H, D, device=dev, dtype=dt) / math.sqrt(D)
            v = torch.randn(B, T, H, D, device=dev, dtype=dt)
            do = torch.randn(B, T, H, D, device=dev, dtype=dt)
            g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, device=dev)).float() / 16
            o = torch.empty_like(v)
            dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
            dg = torch.empty_like(g)
            dims = Dims(B, T, H, D, D, 0, None, 0, DT[dt])
            dn = str(dt).replace("torch.", "")
            base = dict(B=B, T=T, H=H, D=D, dtype=dn)

            def lin_f():
                L.ok(L.l.la_linear_attn_forward(L.ctx, ctypes.byref(lo), ctypes.byref(dims), P(o),
                                                None, None, P(q), P(k), P(v), None, None))

            def lin_fb():
                lin_f()
                L.ok(L.l.la_linear_attn_backward(L.ctx, ctypes.byref(lo), ctypes.byref(dims), P(dq),
                                                 P(dk), P(dv), None, None, P(do), None, None, P(q),
                                                 P(k), P(v), None, None))

            def sg_f():
                L.ok(L.l.la_simple_gla_forward(L.ctx, ctypes.byref(go), ctypes.byref(dims), P(o),
                                               None, P(q), P(k), P(v), P(g), None, None))

            def sg_fb():
                sg_f()
                L.ok(L.l.la_simple_gla_backward(L.ctx, ctypes.byref(go), ctypes.byref(dims), P(dq),
                                                P(dk), P(dv), P(dg), None, None, P(do), None, P(q),
                                                P(k), P(v), P(g), None, None))

            if a.profile:
                profile_kernels(a.out, base, "linear", lin_fb)
                profile_kernels(a.out, base, "simple_gla", sg_fb)
            attempt(a.out, dict(base, op="linear", impl="linattn", mode="fwd"), lin_f)
            attempt(a.out, dict(base, op="linear", impl="linattn", mode="fwd+bwd"), lin_fb)
            attempt(a.out, dict(base, op="simple_gla", impl="linattn", mode="fwd"), sg_f)
            attempt(a.out, dict(base, op="simple_gla", impl="linattn", mode="fwd+bwd"), sg_fb)
            if fla:
                qr, kr, vr = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
                gr = g.detach().clone().requires_grad_(True)
                fops = a.fla_ops.split(",")
                if "lin" in fops:
                    attempt(a.out, dict(base, op="linear", impl="fla", mode="fwd"),
                            lambda: fla["lin"](q, k, v, normalize=False))
                    attempt(a.out, dict(base, op="linear", impl="fla", mode="fwd+bwd"),
                            lambda: fla["lin"](qr, kr, vr, normalize=False)[0].backward(do))
                if "sgla" in fops:
                    attempt(a.out, dict(base, op="simple_gla", impl="fla", mode="fwd"),
                            lambda: fla["sgla"](q, k, v, g=g))
                    attempt(a.out, dict(base, op="simple_gla", impl="fla", mode="fwd+bwd"),
                            lambda: fla["sgla"](qr, kr, vr, g=gr)[0].backward(do))
            del q, k, v, do, g, o, dq, dk, dv, dg
            torch.cuda.empty_cache()

    # DeltaNet (chunk form, l2-normalised q, k in the kernel), fla's chunk_delta_rule beside
    ddt = [d for d in (torch.bfloat16, torch.float32)
           if {torch.bfloat16: "bf16", torch.float32: "fp32"}[d] in a.delta_dtypes.split(",")]
    dsh = [int(x) for x in a.delta_shapes.split(",") if x]
    for (B, T, H, D) in [s_ for i, s_ in enumerate([(8, 2048, 16, 128), (1, 16384, 16, 128)])
                         if i in dsh] if "delta" in sec else ():
        for dt in ddt:
            q = torch.randn(B, T, H, D, device=dev, dtype=dt)
            k = torch.randn(B, T, H, D, device=dev, dtype=dt)
            v = torch.randn(B, T, H, D, device=dev, dtype=dt)
            do = torch.randn(B, T, H, D, device=dev, dtype=dt)
            beta = torch.rand(B, T, H, device=dev).float()
            o = torch.empty_like(v)
            dq, dk, dv, db = (torch.empty_like(t) for t in (q, k, v, beta))
            dims = Dims(B, T, H, D, D, 0, None, 0, DT[dt])
            dl = GatedOpts(2, 0.0, 64, 1)
            base = dict(B=B, T=T, H=H, D=D, dtype=str(dt).replace("torch.", ""), op="delta")

            def dn_f():
                L.ok(L.l.la_delta_rule_forward(L.ctx, ctypes.byref(dl), ctypes.byref(dims), P(o),
                                               None, P(q), P(k), P(v), P(beta), None))

            def dn_fb():
                dn_f()
                L.ok(L.l.la_delta_rule_backward(L.ctx, ctypes.byref(dl), ctypes.byref(dims), P(dq),
                                                P(dk), P(dv), P(db), None, P(do), None, P(q), P(k),
                                                P(v), P(beta), None))

            attempt(a.out, dict(base, impl="linattn", mode="fwd"), dn_f)
            attempt(a.out, dict(base, impl="linattn", mode="fwd+bwd"), dn_fb)
            if a.profile:
                profile_kernels(a.out, {k_: v_ for k_, v_ in base.items() if k_ != "op"}, "delta", dn_fb)
            if fla:
                qr, kr, vr = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
                br = beta.detach().clone().to(dt).requires_grad_(True)
                bb = beta.to(dt)
                attempt(a.out, dict(base, impl="fla", mode="fwd"),
                        lambda: fla["delta"](q, k, v, bb, use_qk_l2norm_in_kernel=True))
                attempt(a.out, dict(base, impl="fla", mode="fwd+bwd"),
                        lambda: fla["delta"](qr, kr, vr, br,
                                             use_qk_l2norm_in_kernel=True)[0].backward(do))
            del q, k, v, do, beta, o, dq, dk, dv, db
            torch.cuda.empty_cache()

    # Gated DeltaNet prefill shape
    B, T, H, HV, D = 1, 65536 if not a.quick else 8192, 2, 8, 128
    for dt in ddt if "gdn" in sec else ():
        q = torch.nn.functional.normalize(torch.randn(B, T, H, D, device=dev), dim=-1).to(dt)
        k = torch.nn.functional.normalize(torch.randn(B, T, H, D, device=dev), dim=-1).to(dt)
        v = torch.randn(B, T, HV, D, device=dev, dtype=dt)
        g = torch.nn.functional.logsigmoid(torch.randn(B, T, HV, device=dev)).float() / 16
        beta = torch.rand(B, T, HV, device=dev).float()
        o = torch.empty_like(v)
        dims = Dims(B, T, H, D, D, HV, None, 0, DT[dt])
        dn = str(dt).replace("torch.", "")
        base = dict(B=B, T=T, H=H, HV=HV, D=D, dtype=dn, op="gated_delta")

        def gdn_f():
            L.ok(L.l.la_gated_delta_rule_forward(L.ctx, ctypes.byref(go), ctypes.byref(dims), P(o),
                                                 None, P(q), P(k), P(v), P(g), P(beta), None))

        dq, dk = torch.empty_like(q), torch.empty_like(k)
        dv, do = torch.empty_like(v), torch.randn_like(v)
        dg, db = torch.empty_like(g), torch.empty_like(beta)

        def gdn_fb():
            gdn_f()
            L.ok(L.l.la_gated_delta_rule_backward(L.ctx, ctypes.byref(go), ctypes.byref(dims), P(dq),
                                                  P(dk), P(dv), P(dg), P(db), None, P(do), None,
                                                  P(q), P(k), P(v), P(g), P(beta), None))

        attempt(a.out, dict(base, impl="linattn", mode="fwd"), gdn_f)
        attempt(a.out, dict(base, impl="linattn", mode="fwd+bwd"), gdn_fb)
        if a.profile:
            profile_kernels(a.out, {k_: v_ for k_, v_ in base.items() if k_ != "op"}, "gated_delta", gdn_fb)
        go_r = go
        go = GatedOpts(1, 0.0, 64, 0)  # the recurrent form, for comparison
        if not a.no_recurrent:
            attempt(a.out, dict(base, impl="linattn", mode="fwd (recurrent form)"), gdn_f)
        go = go_r
        if fla:
            qr, kr, vr = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
            gr, br = g.detach().clone().requires_grad_(True), beta.detach().clone().requires_grad_(True)
            attempt(a.out, dict(base, impl="fla", mode="fwd"),
                    lambda: fla["gdn"](q, k, v, g, beta))
            attempt(a.out, dict(base, impl="fla", mode="fwd+bwd"),
                    lambda: fla["gdn"](qr, kr, vr, gr, br)[0].backward(torch.ones_like(o)))
        del q, k, v, g, beta, o
        torch.cuda.empty_cache()

    # decoding step: state fp32 [N, HV, K, V], one token, bf16 inputs
    for (N, H, D) in [(64, 16, 128), (1, 16, 128)] if "step" in sec else ():
        dt = torch.bfloat16
        S = torch.randn(N, H, D, D, device=dev) * 0.1
        q = torch.nn.functional.normalize(torch.randn(N, H, D, device=dev), dim=-1).to(dt)
        k = torch.nn.functional.normalize(torch.randn(N, H, D, device=dev), dim=-1).to(dt)
        v = torch.randn(N, H, D, device=dev, dtype=dt)
        g = torch.nn.functional.logsigmoid(torch.randn(N, H, device=dev)).float()
        beta = torch.rand(N, H, device=dev).float()
        o = torch.empty_like(v)
        cfg = DecCfg(4, N, H, 0, D, D, 0, 0, 0.0, 0.0, 1)
        state_bytes = 2 * S.numel() * 4
        base = dict(N=N, H=H, D=D, dtype="bfloat16", op="gdn_step", state_bytes=state_bytes)

        def step():
            L.ok(L.l.la_state_step(L.ctx, ctypes.byref(cfg), 1, P(S), None, P(o), P(q), P(k), P(v),
                                   P(g), None, P(beta)))

        cols = os.environ.get("LINATTN_CUDA_STEP_COLS", "auto")
        base["cols"] = cols
        attempt(a.out, dict(base, impl="linattn", mode="step"), step)
        # a decoding loop: 100 direct calls back to back, per step (host-bound
        # when the host enqueues slower than the GPU runs them)
        def loop100():
            for _ in range(100):
                step()
        try:
            ms, n = timeit(loop100, 10)
            record(a.out, **base, impl="linattn", mode="step, 100 direct calls, per step",
                   ms=round(ms / 100, 5), calls=n)
        except Exception as e:  # noqa: BLE001
            record(a.out, **base, impl="linattn", mode="step loop", ms=None, note=str(e)[:200])
        # host time of one direct call (ctypes + checks + launch), no sync
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(1000):
            step()
        host_us = (time.perf_counter() - t0) * 1e3
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(1000):  # the ctypes floor: a trivial library call, same arguments style
            L.l.la_ctx_is_cuda(L.ctx)
        floor_us = (time.perf_counter() - t0) * 1e3
        record(a.out, **base, impl="linattn", mode="host time per direct call (us)",
               ms=None, us=round(host_us, 3), ctypes_trivial_call_us=round(floor_us, 3))
        # the same step captured in a CUDA graph (a context bound to the capture stream)
        try:
            s2 = torch.cuda.Stream()
            L2 = Lib(a.lib, s2.cuda_stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=s2):
                L2.ok(L2.l.la_state_step(L2.ctx, ctypes.byref(cfg), 1, P(S), None, P(o), P(q), P(k),
                                         P(v), P(g), None, P(beta)))
            attempt(a.out, dict(base, impl="linattn", mode="step (graph replay)"), graph.replay)
            # 100 steps in one graph: the device time per step of a graph-driven decode loop
            g100 = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g100, stream=s2):
                for _ in range(100):
                    L2.ok(L2.l.la_state_step(L2.ctx, ctypes.byref(cfg), 1, P(S), None, P(o), P(q),
                                             P(k), P(v), P(g), None, P(beta)))
            ms, n = timeit(g100.replay, 30)
            record(a.out, **base, impl="linattn", mode="step, graph of 100 steps, per step",
                   ms=round(ms / 100, 5), calls=n,
                   pct_copy=round(100 * state_bytes / (ms / 100 * 1e-3) / 1e12 / COPY_TBPS[0], 1)
                   if COPY_TBPS else None)
        except Exception as e:  # noqa: BLE001
            record(a.out, **base, impl="linattn", mode="step (graph replay)", ms=None,
                   note="failed: " + str(e)[:200])
        if fla:
            q4, k4, v4 = q[:, None], k[:, None], v[:, None]
            g4, b4 = g[:, None], beta[:, None]
            attempt(a.out, dict(base, impl="fla", mode="step"),
                    lambda: fla["gdn_step"](q4, k4, v4, g=g4, beta=b4, initial_state=S,
                                            output_final_state=True, cu_seqlens=None))
        del S
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
