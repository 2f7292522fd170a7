#!/usr/bin/env python3
"""cuda-sgdot24: a float64 rounding model of the simple GLA backward's two
gate-gradient walks (src/cuda/lin_fused.cu: the dq walk forward, the dk walk
reverse, chunks of 64), to see which fp32 operand's 16-bit part count drives
dg / dg_gamma's error: the state S (its parts per chunk), P (the gated
Q K^T entries) or Vt (the scaled v rows summed into the state). Each
operand is rounded to n bf16 parts (hi, lo, lo2: round to nearest each) or
kept exact (0); dg_t = sum_{s >= t} (q_s.dq_s - k_s.dk_s) + <dS_T, S_T>,
dg_gamma = sum_t dg_t, compared with the unrounded model (relative error).
Every walk here rounds P from the same float64 value, as the library's two
walks do since cuda-sgdot24 (bitwise the same P entry); --mis gives the
reverse walk's off-diagonal-block P entries a relative mismatch (normal,
that standard deviation) before the rounding, as before cuda-sgdot24.

    python3 bench/sgla_dot_model.py [--T 4097] [--s0 1] [--dst 1] [--mis 0]

cuda-sgdot24 (T 4097, K = V = 128, extreme gates): S and Vt at two parts
(P three) gave dg_gamma up to 3.6e-3, as all at two did; P at two (S, Vt
three) 1.3e-5, as all at three; the same with S0 = dS_T = 0.
"""
import argparse

import numpy as np


def bf16(x):
    b = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
    return b.astype(np.uint32).view(np.float32)


def parts(x, n):
    """x (rounded to fp32 first) as the sum of its n bf16 parts; n = 0: exact"""
    if n == 0:
        return np.asarray(x, np.float64)
    r = np.asarray(x, np.float32).astype(np.float64)
    acc = np.zeros_like(r)
    for _ in range(n):
        acc += bf16((r - acc).astype(np.float32)).astype(np.float64)
    return acc


def walk(qq, kk, vv, g, S0, scale, rev, nS, nP, nT, mis, rng):
    """o_i = scale e^{G_i} q_i S + sum_{j<=i} P_ij v_j, P_ij = scale e^{G_i - G_j} q_i.k_j,
    S <- e^{G_L} S + k^T Vt, Vt_j = e^{G_L - G_j} v_j (rev: the mirror image, chunks
    in reverse); returns o and the last state"""
    T, V = qq.shape[0], vv.shape[1]
    S, o = S0.copy(), np.zeros((T, V))
    chunks = [(c, min(c + 64, T)) for c in range(0, T, 64)]
    for a, b in chunks[::-1] if rev else chunks:
        G = np.cumsum(g[a:b])
        GL, L = G[-1], b - a
        q, k, v = qq[a:b], kk[a:b], vv[a:b]
        d = G[None, :] - G[:, None] if rev else G[:, None] - G[None, :]
        mask = np.triu(np.ones((L, L))) if rev else np.tril(np.ones((L, L)))
        P = scale * (q @ k.T) * np.exp(np.minimum(d, 0)) * mask
        if rev and mis:
            blk = np.arange(L) // 16
            P *= np.where(blk[:, None] != blk[None, :], 1 + mis * rng.standard_normal((L, L)), 1)
        ef = np.exp(GL - G) if rev else np.exp(G)
        o[a:b] = scale * ef[:, None] * (q @ parts(S, nS)) + parts(P, nP) @ v
        vt = np.exp(G) if rev else np.exp(GL - G)
        S = np.exp(GL) * S + k.T @ parts(vt[:, None] * v, nT)
    return o, S


def case(T, K, V, gates, extreme, seed, cfgs, s0m, dsm, mis):
    rng = np.random.default_rng(seed)
    q, k = (bf16(rng.uniform(-1, 1, (T, K))).astype(np.float64) for _ in range(2))
    v, dO = (bf16(rng.uniform(-1, 1, (T, V))).astype(np.float64) for _ in range(2))
    S0 = rng.uniform(-0.5, 0.5, (K, V)) * s0m
    dST = rng.uniform(-1, 1, (K, V)) * dsm
    g = np.zeros(T)
    if "g" in gates:
        g = rng.uniform(-1, 0, T)
        if extreme:
            r = rng.integers(0, 16, T)
            g[r == 0], g[(r == 1) | (r == 2)] = -1e4, 0
    if "gamma" in gates:
        g = g + np.log(1 - 2.0**-5)
    g = g.astype(np.float32).astype(np.float64)
    scale, res = 1 / np.sqrt(K), {}
    for name, (nS, nP, nT) in cfgs.items():
        r2 = np.random.default_rng(7)
        dq, ST = walk(dO, v, k, g, S0.T.copy(), scale, False, nS, nP, nT, 0, r2)  # S^T
        dk, _ = walk(v, dO, q, g, dST.T / scale, scale, True, nS, nP, nT, mis, r2)  # dS^T / scale
        r = np.sum(q * dq, 1) - np.sum(k * dk, 1)
        dg = np.cumsum(r[::-1])[::-1] + np.sum(dST * ST.T)
        res[name] = (dg, dg.sum())
    ex = res["exact"]
    for name in cfgs:
        if name != "exact":
            dg, dgam = res[name]
            e = np.sqrt(np.sum((dg - ex[0]) ** 2) / np.sum(ex[0] ** 2))
            print("T%d %-9s %-8s seed %d %-10s dg_gamma %.2e  dg %.2e" %
                  (T, "+".join(gates), "extreme" if extreme else "", seed, name,
                   abs(dgam - ex[1]) / abs(ex[1]), e))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", type=int, default=4097)
    ap.add_argument("--s0", type=float, default=1.0)
    ap.add_argument("--dst", type=float, default=1.0)
    ap.add_argument("--mis", type=float, default=0.0)
    a = ap.parse_args()
    cfgs = {"exact": (0, 0, 0), "all3": (3, 3, 3), "all2": (2, 2, 2),
            "S2,Vt2,P3": (2, 3, 2), "P2,S3,Vt3": (3, 2, 3)}
    for gates, ext in ((("g", "gamma"), True), (("g",), True), (("gamma",), False)):
        for seed in range(2):
            case(a.T, 128, 128, gates, ext, seed, cfgs, a.s0, a.dst, a.mis)


if __name__ == "__main__":
    main()
