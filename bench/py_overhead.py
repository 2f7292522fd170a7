"""The Python package's cost over the C calls it makes, at issue 12's shape
(bench/PYTHON.md, cpu-py7).

For each op, modes alternate in rounds in one process (the order rotates
every round), one forward + backward per mode per round:
  c        the same C calls through ctypes with every output buffer allocated
           once and reused (touched): what a C harness pays
  py       the package through torch autograd: o = op(...), o.backward(do),
           gradients dropped (as a training step does)
  py_saved the same with save_for_backward=True (delta rules)
  *_nopool the py modes with the package's output pool off (plain torch.empty)
  layer    py with q, k, v (, g, beta) made by a torch op from the leaves in
           every step (fresh torch tensors and their gradients, as in a
           model: torch's own allocations churn memory beside the op)
  layer_saved the same with save_for_backward=True
  c_saved  c with a la_saved object reused (delta rules)
Per mode: medians of thread CPU time and wall time of the forward and the
backward, minor page faults of this thread per call, and the median of the
per-round ratios to c and to py (py_nopool for the *_nopool modes), and the
first (warm-up) call's forward + backward. Library and torch each on one
thread. The *_nopool modes churn fresh mappings, which on the shared VMs
slowed the other modes of the same process too: run them in a separate
process (--modes c,py_nopool,py_saved_nopool,c_saved).

usage: LINATTN_LIBRARY=build/liblinattn.so python3 bench/py_overhead.py
       [--ops delta,gdn,sgla,gla,linear] [--rounds 5] [--T 8192] [--H 8]
       [--modes c,py,py_saved,c_saved,py_nopool,py_saved_nopool]
"""

import argparse
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

import torch  # noqa: E402

import linattn  # noqa: E402
from linattn import _core, _ops  # noqa: E402
from linattn._pool import POOL  # noqa: E402

torch.set_num_threads(1)
linattn.set_num_threads(1)

FAMILY = {"delta": "delta_rule", "gdn": "gated_delta_rule", "sgla": "simple_gla",
          "gla": "gla"}


def faults():
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


def inputs(op, B, T, H, D, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=gen)

    x = {"q": r(B, T, H, D), "k": r(B, T, H, D), "v": r(B, T, H, D)}
    if op in ("delta", "gdn"):
        x["beta"] = torch.sigmoid(r(B, T, H))
    if op in ("gdn", "sgla"):
        x["g"] = torch.nn.functional.logsigmoid(r(B, T, H) + 4.0)
    if op == "gla":
        x["g"] = torch.nn.functional.logsigmoid(r(B, T, H, D) + 4.0)
    if op == "linear":
        x["q"], x["k"] = x["q"] * 0.1, x["k"] * 0.1
    do = r(B, T, H, D)
    return x, do


class ReuseXP:
    """TorchXP whose outputs are allocated once per call site and reused."""

    def __init__(self, xp):
        self._xp = xp
        self.cache = {}
        self.n = 0

    def __getattr__(self, name):
        return getattr(self._xp, name)

    def reset(self):
        self.n = 0

    def _get(self, shape):
        key = (self.n, tuple(shape))
        self.n += 1
        t = self.cache.get(key)
        if t is None:
            t = self.cache[key] = torch.zeros(shape)
        return t

    def empty(self, shape):
        return self._get(shape)

    empty_state = empty


class Op:
    def __init__(self, op, B, T, H, D):
        self.op = op
        self.x, self.do = inputs(op, B, T, H, D)
        self.fam = FAMILY.get(op)
        xp = _core.torch_xp(torch.device("cpu"), torch.float32)
        self.rxp = ReuseXP(xp)
        self.saved = None

    # ---- the C floor: prepared inputs, reused outputs
    def c_fwd(self, saved=False):
        self.rxp.reset()
        x = self.x
        if self.fam is None:
            _ops.linear_forward(x["q"], x["k"], x["v"], feature_map="identity",
                                normalize=False, xp=self.rxp)
            return
        if saved and self.saved is None:
            self.saved = _core.SavedForBackward(_core.cpu_context_object())
        self.prep = _ops.gated_prepare(self.rxp, self.fam, x["q"], x["k"], x["v"], x.get("g"),
                                       None, x.get("beta"), None, None)
        _ops.gated_forward(self.fam, None, None, None, use_qk_l2norm=self.l2, xp=self.rxp,
                           prepared=self.prep, saved=self.saved.handle if saved else None)

    def c_bwd(self, saved=False):
        x = self.x
        if self.fam is None:
            _ops.linear_backward(self.do, None, None, x["q"], x["k"], x["v"],
                                 feature_map="identity", normalize=False, need_dh0=False,
                                 need_dz0=False, xp=self.rxp)
            return
        _ops.gated_backward(self.fam, self.do, None, None, None, None, use_qk_l2norm=self.l2,
                            need_dh0=False, need_dg_gamma=False, xp=self.rxp,
                            prepared=self.prep, saved=self.saved.handle if saved else None)

    @property
    def l2(self):
        return self.op in ("delta", "gdn")

    # ---- through the package and torch autograd
    def leaves(self):
        return {n: t.detach().requires_grad_() for n, t in self.x.items()}

    def py_fwd(self, saved=False, layer=False):
        lv = self.lv = self.leaves()
        if layer:  # inputs made by torch ops each step (fresh tensors), as in a model
            lv = {n: t * 1.0 for n, t in lv.items()}
        if self.fam is None:
            o, _ = linattn.linear_attention(lv["q"], lv["k"], lv["v"], feature_map="identity",
                                            normalize=False)
        else:
            o, _ = linattn.gated_attention(self.fam, lv["q"], lv["k"], lv["v"], g=lv.get("g"),
                                           beta=lv.get("beta"), use_qk_l2norm=self.l2,
                                           save_for_backward=saved)
        self.o = o

    def layer_fwd(self, saved=False):
        self.py_fwd(saved, layer=True)

    def py_bwd(self, saved=False):
        self.o.backward(self.do)
        self.o = None
        self.lv = None  # gradients dropped with the leaves


def nopool(f, b):
    def wrap(fn):
        def g(s):
            lim = POOL.limit
            POOL.limit = 0
            try:
                fn(s)
            finally:
                POOL.limit = lim
        return g
    return wrap(f), wrap(b)


def measure(fn):
    f0, c0, w0 = faults(), time.thread_time(), time.perf_counter()
    fn()
    return time.thread_time() - c0, time.perf_counter() - w0, faults() - f0


def run_op(op, args, modes):
    o = Op(op, 1, args.T, args.H, args.D)
    if o.fam not in ("delta_rule", "gated_delta_rule"):
        modes = [m for m in modes if "saved" not in m]
    calls = {"c": (o.c_fwd, o.c_bwd, False), "c_saved": (o.c_fwd, o.c_bwd, True),
             "py": (o.py_fwd, o.py_bwd, False), "py_saved": (o.py_fwd, o.py_bwd, True)}
    calls["layer"] = (o.layer_fwd, o.py_bwd, False)
    calls["layer_saved"] = (o.layer_fwd, o.py_bwd, True)
    for m in ("py", "py_saved"):  # the same without the output pool (limit 0)
        calls[m + "_nopool"] = nopool(*calls[m][:2]) + (calls[m][2],)
    rec = {m: [] for m in modes}
    warm = {}
    for m in modes:  # warm-up: reused buffers touched, pools filled
        f, b, s = calls[m]
        warm[m] = measure(lambda: f(s)) + measure(lambda: b(s))
    for r in range(args.rounds):
        order = modes[r % len(modes):] + modes[:r % len(modes)]
        for m in order:
            f, b, s = calls[m]
            rf = measure(lambda: f(s))
            rb = measure(lambda: b(s))
            rec[m].append(rf + rb)
    med = statistics.median
    la = os.getloadavg()[0]
    print("## %s  B*H=%d T=%d D=%d, %d rounds, load %.2f" % (op, args.H, args.T, args.D,
                                                             args.rounds, la))
    print("%-15s %7s %7s %7s %8s %8s %8s %7s %7s %9s" % (
        "mode", "fwd cpu", "bwd cpu", "f+b cpu", "f+b wall", "vs c cpu", "vs py", "flt fwd",
        "flt bwd", "1st f+b"))

    def ratio(m, ref):
        a, b = rec[m], rec.get(ref)
        if not b:
            return float("nan")
        return med([(a[i][0] + a[i][3]) / (b[i][0] + b[i][3]) for i in range(len(a))])

    for m in modes:
        x = rec[m]
        py = "py_nopool" if "nopool" in m else "layer" if "layer" in m else "py"
        print("%-15s %7.3f %7.3f %7.3f %8.3f %8.3f %8.3f %7d %7d %9.3f" % (
            m, med([a[0] for a in x]), med([a[3] for a in x]), med([a[0] + a[3] for a in x]),
            med([a[1] + a[4] for a in x]), ratio(m, "c"), ratio(m, py),
            med([a[2] for a in x]), med([a[5] for a in x]), warm[m][0] + warm[m][3]))
    sys.stdout.flush()
    return rec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", default="delta,gdn,sgla,gla,linear")
    ap.add_argument("--modes", default="c,py,py_saved,c_saved")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--T", type=int, default=8192)
    ap.add_argument("--H", type=int, default=8)
    ap.add_argument("--D", type=int, default=128)
    args = ap.parse_args()
    print("library %s, torch %s" % (_core.library_path, torch.__version__))
    for op in args.ops.split(","):
        run_op(op, args, args.modes.split(","))


if __name__ == "__main__":
    main()
