"""python -m linattn.bench: what the Python layer costs, and how the C ops
compare with a pure-PyTorch implementation of the same op.

1. Per-call overhead at a tiny shape (B=T=H=1, K=V=16): the raw C call through
   ctypes with prebuilt arguments, against linattn's numpy call, torch call
   without a graph, with autograd (forward) and forward+backward.
2. At B=1, T=8192, H=16, D=128 (Gated DeltaNet, the op the issue measures):
   linattn forward and forward+backward against (a) the raw C calls with
   preallocated buffers (the wrapper's cost, target within 5%) and (b) a
   pure-PyTorch chunked implementation (WY form, chunk 64) in the same
   process, differentiated by torch autograd (target: ours >= 5x faster
   forward+backward).
Medians of --repeats runs, in wall time and in CPU time of this process
(time.process_time): on a shared machine other processes inflate wall time
but hardly the CPU time the process itself spends, so both are printed.
"""

import argparse
import ctypes
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

import linattn
from linattn import _core, _ffi, _ops


def median_time(fn, repeats, inner=1):
    """(median wall seconds, median CPU seconds of this process) per call."""
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(inner):
            fn()
        wall.append((time.perf_counter() - t0) / inner)
        cpu.append((time.process_time() - c0) / inner)
    return statistics.median(wall), statistics.median(cpu)


def torch_chunk_gated_delta_rule(q, k, v, g, beta, scale, C=64):
    """Pure-PyTorch chunkwise Gated DeltaNet (MATH.md section 4, WY form):
    within a chunk, Delta = U - W S with A = I + strictly_lower(diag(beta)
    (K K^T * Gamma)), W = A^-1 diag(beta) (K * e^G), U = A^-1 diag(beta) V;
    o = scale (Q e^G S + (Q K^T * Gamma * causal) Delta);
    S <- e^G_C S + (K * e^(G_C - G))^T Delta.  Shapes [B, T, H, D], T % C == 0."""
    B, T, H, K = q.shape
    Vd = v.shape[-1]
    n = T // C
    q, k, v = (x.transpose(1, 2).reshape(B, H, n, C, -1) for x in (q, k, v))
    g = g.transpose(1, 2).reshape(B, H, n, C)
    beta = beta.transpose(1, 2).reshape(B, H, n, C)
    G = g.cumsum(-1)
    tri = torch.ones(C, C, dtype=torch.bool).tril()
    diff = G.unsqueeze(-1) - G.unsqueeze(-2)
    Gam = torch.exp(diff.masked_fill(~tri, float("-inf")))
    kk = (k @ k.transpose(-1, -2)) * Gam * beta.unsqueeze(-1)
    A = torch.eye(C) + kk.tril(-1)  # I + strictly lower part
    W = torch.linalg.solve_triangular(A, beta.unsqueeze(-1) * k * G.exp().unsqueeze(-1),
                                      upper=False, unitriangular=True)
    U = torch.linalg.solve_triangular(A, beta.unsqueeze(-1) * v, upper=False,
                                      unitriangular=True)
    qk = (q @ k.transpose(-1, -2)) * Gam
    qg = q * G.exp().unsqueeze(-1)
    kdec = k * torch.exp(G[..., -1:] - G).unsqueeze(-1)
    S = torch.zeros(B, H, K, Vd)
    outs = []
    for c in range(n):
        delta = U[:, :, c] - W[:, :, c] @ S
        outs.append(scale * (qg[:, :, c] @ S + qk[:, :, c] @ delta))
        S = torch.exp(G[:, :, c, -1])[..., None, None] * S + kdec[:, :, c].transpose(-1, -2) @ delta
    o = torch.stack(outs, 2).reshape(B, H, T, Vd).transpose(1, 2)
    return o, S


def gdn_inputs(B, T, H, D, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, D, generator=gen)
    k = F.normalize(torch.randn(B, T, H, D, generator=gen), dim=-1)
    v = torch.randn(B, T, H, D, generator=gen)
    g = F.logsigmoid(torch.randn(B, T, H, generator=gen) + 3)
    beta = torch.rand(B, T, H, generator=gen)
    return q, k, v, g, beta


class RawGDN:
    """The C forward/backward through ctypes with every buffer and argument
    prepared once: the cost floor the wrapper is measured against."""

    def __init__(self, q, k, v, g, beta, do=None):
        B, T, H, K = q.shape
        V = v.shape[-1]
        self.keep = [q, k, v, g, beta]
        self.o = torch.empty(B, T, H, V)
        self.do = do if do is not None else torch.randn(B, T, H, V)
        self.grads = [torch.empty_like(x) for x in (q, k, v, g, beta)]
        self.dims = _ffi.la_dims(B, T, H, K, V, H, None, 0, 0)
        self.opts = _ffi.la_gated_opts(_ffi.FORM["chunk"], 0.0, 0, 0)
        ctx = _core.cpu_context()
        P = [x.data_ptr() for x in (q, k, v, g, beta)]
        self.fwd_args = (ctx, ctypes.byref(self.opts), ctypes.byref(self.dims),
                         self.o.data_ptr(), None, *P, None)
        Dg = [x.data_ptr() for x in self.grads]
        self.bwd_args = (ctx, ctypes.byref(self.opts), ctypes.byref(self.dims), *Dg, None,
                         self.do.data_ptr(), None, *P, None)
        self.f = _core.lib.la_gated_delta_rule_forward
        self.b = _core.lib.la_gated_delta_rule_backward

    def forward(self):
        assert self.f(*self.fwd_args) == 0

    def forward_backward(self):
        assert self.f(*self.fwd_args) == 0
        assert self.b(*self.bwd_args) == 0

    def forward_fresh(self):
        """The C forward into a newly allocated o, as any caller returning a new
        tensor must (first-touch page faults included)."""
        o = torch.empty_like(self.o)
        a = list(self.fwd_args)
        a[3] = o.data_ptr()
        assert self.f(*a) == 0
        return o

    def forward_backward_fresh(self):
        self.forward_fresh()
        gr = [torch.empty_like(x) for x in self.grads]
        a = list(self.bwd_args)
        a[3:8] = [x.data_ptr() for x in gr]
        assert self.b(*a) == 0
        return gr


def overhead(repeats):
    q, k, v, g, beta = gdn_inputs(1, 1, 1, 16)
    raw = RawGDN(q, k, v, g, beta)
    qn, kn, vn, gn, bn = (x.numpy() for x in (q, k, v, g, beta))
    qr, kr, vr, gr, br = (x.clone().requires_grad_() for x in (q, k, v, g, beta))
    inner = 2000
    rows = [("raw C call (ctypes, prebuilt args)", raw.forward),
            ("linattn numpy forward", lambda: linattn.chunk_gated_delta_rule(qn, kn, vn, gn, bn)),
            ("linattn torch forward (no graph)",
             lambda: linattn.chunk_gated_delta_rule(q, k, v, g, beta)),
            ("linattn torch forward (autograd graph)",
             lambda: linattn.chunk_gated_delta_rule(qr, kr, vr, gr, br)),
            ("raw C forward + backward", raw.forward_backward),
            ("linattn torch forward + backward",
             lambda: linattn.chunk_gated_delta_rule(qr, kr, vr, gr, br)[0].sum().backward()),
            ("torch floor: (q * v).sum().backward()", lambda: (qr * vr).sum().backward())]
    out = []
    for name, fn in rows:
        fn()
        w, c = median_time(fn, repeats, inner)
        out.append((name, w * 1e6, c * 1e6))
    return out


def large(repeats, T, H, D):
    q, k, v, g, beta = gdn_inputs(1, T, H, D)
    scale = D ** -0.5
    do = torch.randn(1, T, H, D)
    raw = RawGDN(q, k, v, g, beta, do)
    # same op? check the pure-PyTorch chunked version against ours at a small size
    xs = gdn_inputs(1, 256, 2, 32, seed=1)
    a, sa = linattn.chunk_gated_delta_rule(*xs, output_final_state=True)
    b, sb = torch_chunk_gated_delta_rule(*xs, scale=32 ** -0.5)
    agree = max(((a - b).norm() / b.norm()).item(), ((sa - sb).norm() / sb.norm()).item())

    def ours_fwd():
        linattn.chunk_gated_delta_rule(q, k, v, g, beta)

    leaves = [x.clone().requires_grad_() for x in (q, k, v, g, beta)]

    def ours_fb():
        for x in leaves:
            x.grad = None  # no accumulation into old gradients
        o, _ = linattn.chunk_gated_delta_rule(*leaves)
        o.backward(do)

    def torch_fwd():
        with torch.no_grad():
            torch_chunk_gated_delta_rule(q, k, v, g, beta, scale)

    def torch_fb():
        for x in leaves:
            x.grad = None
        o, _ = torch_chunk_gated_delta_rule(*leaves, scale=scale)
        o.backward(do)

    res = {"agree": agree}
    for name, fn in (("raw_fwd", raw.forward), ("fresh_fwd", raw.forward_fresh),
                     ("ours_fwd", ours_fwd), ("torch_fwd", torch_fwd),
                     ("raw_fb", raw.forward_backward), ("fresh_fb", raw.forward_backward_fresh),
                     ("ours_fb", ours_fb), ("torch_fb", torch_fb)):
        fn()  # warm-up (allocator, thread pool)
        res[name], res[name + "_cpu"] = median_time(fn, repeats)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for linattn and for torch (same count; default 1)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--T", type=int, default=8192)
    ap.add_argument("--H", type=int, default=16)
    ap.add_argument("--D", type=int, default=128)
    ap.add_argument("--skip-large", action="store_true")
    a = ap.parse_args(argv)
    linattn.set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    print("linattn %s, library %s (%s), torch %s, numpy %s, threads %d (linattn and torch), "
          "medians of %d runs" % (linattn.__version__, linattn.library_path, linattn.isa(),
                                  torch.__version__, np.__version__, a.threads, a.repeats))
    try:
        print("load average: %.2f %.2f %.2f on %d CPUs" % (*os.getloadavg(), os.cpu_count()))
    except OSError:
        pass
    print("\n1. per-call cost at B=T=H=1, K=V=16 (chunk Gated DeltaNet), wall / CPU")
    rows = overhead(a.repeats)
    for name, w, c in rows:
        print("  %-42s %8.1f us %8.1f us" % (name, w, c))
    for i, label in ((1, "numpy forward"), (2, "torch forward"), (3, "autograd forward")):
        print("  python overhead, %-17s %6.1f us wall %6.1f us CPU (target <= 30 us)"
              % (label, rows[i][1] - rows[0][1], rows[i][2] - rows[0][2]))
    print("  python overhead, fwd+bwd           %6.1f us wall %6.1f us CPU (of which torch's "
          "own autograd floor above)" % (rows[5][1] - rows[4][1], rows[5][2] - rows[4][2]))
    if a.skip_large:
        return
    print("\n2. B=1, T=%d, H=%d, D=%d, chunk Gated DeltaNet" % (a.T, a.H, a.D))
    x, y = torch.randn(512, 512), torch.randn(512, 512)
    _, c = median_time(lambda: x @ y, a.repeats, 5)
    print("  torch's BLAS: 512x512 matmul %.1f GFLOP/s (CPU time; Debian's torch uses the "
          "system libblas: netlib is slow, OpenBLAS fast)" % (2 * 512 ** 3 / c / 1e9))
    r = large(a.repeats, a.T, a.H, a.D)
    print("  pure-PyTorch chunked version vs linattn at T=256: rel. error %.1e (%s)"
          % (r["agree"], "same op" if r["agree"] < 1e-4 else "NOT THE SAME OP: ratios invalid"))
    print("  %-28s %10s %10s %10s %10s" % ("", "fwd wall", "fwd CPU", "f+b wall", "f+b CPU"))
    for n, k1, k2 in (("raw C call, reused buffers", "raw_fwd", "raw_fb"),
                      ("raw C call, fresh outputs", "fresh_fwd", "fresh_fb"),
                      ("linattn (torch autograd)", "ours_fwd", "ours_fb"),
                      ("pure PyTorch chunked", "torch_fwd", "torch_fb")):
        print("  %-28s %9.3fs %9.3fs %9.3fs %9.3fs" % (n, r[k1], r[k1 + "_cpu"], r[k2],
                                                       r[k2 + "_cpu"]))
    for sfx, label in (("", "wall"), ("_cpu", "CPU")):
        print("  %-4s linattn / raw C:        forward %.3f, fwd+bwd %.3f (target <= 1.05); "
              "vs raw C with fresh outputs: %.3f, %.3f"
              % (label, r["ours_fwd" + sfx] / r["raw_fwd" + sfx],
                 r["ours_fb" + sfx] / r["raw_fb" + sfx],
                 r["ours_fwd" + sfx] / r["fresh_fwd" + sfx],
                 r["ours_fb" + sfx] / r["fresh_fb" + sfx]))
        print("  %-4s pure PyTorch / linattn: forward %.2fx, fwd+bwd %.2fx (target fwd+bwd "
              ">= 5x)" % (label, r["torch_fwd" + sfx] / r["ours_fwd" + sfx],
                          r["torch_fb" + sfx] / r["ours_fb" + sfx]))


if __name__ == "__main__":
    main()
