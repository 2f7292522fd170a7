#!/usr/bin/env python3
"""cuda-graph24: one training step of linattn calls (forward + autograd
backward through the Python skin) captured with torch.cuda.graph against the
same step run eagerly: seconds per step over a loop of --iters steps (wall
clock from a synchronised start to a synchronised end, so the host's Python
and launch work counts where it is the bottleneck), the two alternating,
median of --reps. Also checks that a replay gives bitwise the eager step's
outputs and gradients.

    LINATTN_LIBRARY=... python3 bench/gpu_graph.py [--iters 50] [--reps 5]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as Fn

import linattn

DEV = torch.device("cuda", 0)
# family, B, T, H, HV, K = V
CASES = [
    ("gated_delta_rule", 1, 256, 4, 4, 128),
    ("gated_delta_rule", 1, 4096, 2, 8, 128),
    ("simple_gla", 1, 256, 4, 4, 128),
    ("linear", 1, 256, 4, 4, 128),
]


def make(fam, B, T, H, HV, D):
    torch.manual_seed(0)
    x = {"q": torch.randn(B, T, H, D, device=DEV, dtype=torch.bfloat16),
         "k": Fn.normalize(torch.randn(B, T, H, D, device=DEV), dim=-1).bfloat16(),
         "v": torch.randn(B, T, HV, D, device=DEV, dtype=torch.bfloat16),
         "h0": torch.randn(B, HV, D, D, device=DEV)}
    if fam in ("simple_gla", "gated_delta_rule"):
        x["g"] = Fn.logsigmoid(torch.randn(B, T, HV, device=DEV))
    if fam == "gated_delta_rule":
        x["beta"] = torch.sigmoid(torch.randn(B, T, HV, device=DEV))
    return {n: t.requires_grad_() for n, t in x.items()}


def step(fam, xs, seeds):
    if fam == "linear":
        o, ht = linattn.linear_attention(xs["q"], xs["k"], xs["v"], feature_map="identity",
                                         normalize=False, initial_state=xs["h0"],
                                         output_final_state=True)
    else:
        o, ht = linattn.gated_attention(fam, xs["q"], xs["k"], xs["v"], g=xs.get("g"),
                                        beta=xs.get("beta"), initial_state=xs["h0"],
                                        output_final_state=True,
                                        use_qk_l2norm=fam != "simple_gla")
    loss = (o.float() * seeds[0]).sum() + (ht * seeds[1]).sum()
    return [o, ht] + list(torch.autograd.grad(loss, list(xs.values())))


def per_step(run, iters):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        run()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    for fam, B, T, H, HV, D in CASES:
        xs = make(fam, B, T, H, HV, D)
        seeds = [torch.randn(B, T, HV, D, device=DEV), torch.randn(B, HV, D, D, device=DEV)]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step(fam, xs, seeds)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            outs = step(fam, xs, seeds)
        g.replay()
        torch.cuda.synchronize()
        same = all(torch.equal(p, q) for p, q in zip(outs, step(fam, xs, seeds)))
        te, tg = [], []
        for _ in range(a.reps):
            te.append(per_step(lambda: step(fam, xs, seeds), a.iters))
            tg.append(per_step(g.replay, a.iters))
        print("%-17s %d,%5d,H%d,HV%d,%d bf16 fwd+bwd per step: eager %7.1f us, graph replay %7.1f "
              "us (x%.2f; eager runs %s; replays %s); replay bitwise eager: %s"
              % (fam, B, T, H, HV, D, 1e6 * statistics.median(te), 1e6 * statistics.median(tg),
                 statistics.median(te) / statistics.median(tg),
                 " ".join("%.0f" % (1e6 * t) for t in te),
                 " ".join("%.0f" % (1e6 * t) for t in tg), same))


if __name__ == "__main__":
    main()
