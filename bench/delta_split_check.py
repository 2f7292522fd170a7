#!/usr/bin/env python3
"""cuda-split9: float64 check of the algebra of the delta rules' state pass
split over time (src/cuda/delta_state_split.cu), before any kernel: the
sequential chunk pass S' = b_L S + Kd^T (U - W S) against (1) every segment
from a zero state plus its transition M = A_last .. A_first (A_c = b_L I -
Kd^T W, computed as U = 0 columns from the identity), (2) the scan
start(p + 1) = M_p start(p) + local_p, (3) the rerun per segment from its
start: per-chunk states, R and final states must agree to rounding; the
chunk pass itself against the token recurrence. Segments as the kernel's
table (ceil(nch / P) chunks each, trailing ones empty); varlen with
zero-length sequences, with and without an initial state, gates down to
-1e4 and g = 0, beta in {0, 1, 1.99}; max |M| printed (products of
contractions for normalised keys and beta in [0, 2]).

    python3 bench/delta_split_check.py
"""
import numpy as np
rng = np.random.default_rng(1)
C = 64
def prep(k, v, g, beta):
    # per chunk: W = A diag(beta e^{gam}) K, U = A diag(beta) V, Kd = e^{gam_L-gam} k, bL = e^{gam_L}
    L = k.shape[0]; gam = np.cumsum(g)
    kb = k * beta[:, None]
    with np.errstate(over='ignore', invalid='ignore'):  # the upper part (inf) is cut off
        Lo = np.tril((kb @ k.T) * np.exp(gam[:, None] - gam[None, :]), -1)
    A = np.linalg.inv(np.eye(L) + Lo)
    W = A @ (kb * np.exp(gam)[:, None]); U = A @ (v * beta[:, None])
    Kd = k * np.exp(gam[-1] - gam)[:, None]
    return W, U, Kd, np.exp(gam[-1])
def step(S, ch):
    W, U, Kd, bL = ch; R = U - W @ S
    return bL * S + Kd.T @ R, R
def rec(S, k, v, g, beta):  # token recurrence (the oracle)
    o = []
    for t in range(k.shape[0]):
        S = np.exp(g[t]) * S; S = S + beta[t] * np.outer(k[t], v[t] - k[t] @ S)
    return S
def table(lens, P):
    segs = []; ch0 = 0
    for n, Ln in enumerate(lens):
        nch = (Ln + C - 1) // C; cs = (nch + P - 1) // P
        for p in range(P):
            c0 = min(p * cs, nch); c1 = min(c0 + cs, nch)
            segs.append((n, ch0 + c0, c1 - c0))
        ch0 += nch
    return segs
def run(lens, K, V, P, s0=True, gmode='mix', bset=(0, 1, 1.99)):
    N = len(lens); chunks = []; seqchunks = []
    S0 = [rng.standard_normal((K, V)) if s0 else np.zeros((K, V)) for _ in lens]
    finals_ref = []
    for n, Ln in enumerate(lens):
        k = rng.standard_normal((Ln, K)); k /= np.linalg.norm(k, axis=1, keepdims=True)
        v = rng.standard_normal((Ln, V))
        g = np.zeros(Ln) if gmode == 'zero' else -np.abs(rng.standard_normal(Ln)) * 0.1
        if gmode == 'mix' and Ln:
            g[rng.integers(0, Ln, max(1, Ln // 50))] = -1e4; g[rng.random(Ln) < 0.2] = 0.0
        beta = rng.choice(bset, Ln) if Ln else np.zeros(0)
        finals_ref.append(rec(S0[n].copy(), k, v, g, beta))
        for c0 in range(0, Ln, C):
            chunks.append(prep(k[c0:c0+C], v[c0:c0+C], g[c0:c0+C], beta[c0:c0+C]))
    # sequential chunk pass
    hst, Rs, finals = [None]*len(chunks), [None]*len(chunks), []
    ci = 0
    for n, Ln in enumerate(lens):
        S = S0[n].copy()
        for _ in range((Ln + C - 1) // C):
            hst[ci] = S; S, Rs[ci] = step(S, chunks[ci]); ci += 1
        finals.append(S)
    # split
    segs = table(lens, P)
    loc, M = [], []
    for (n, c0, nc) in segs:            # 1. local pass + transition (U = 0, start I)
        S = np.zeros((K, V)); T = np.eye(K)
        for c in range(c0, c0 + nc):
            W, U, Kd, bL = chunks[c]
            S, _ = step(S, chunks[c]); T = bL * T + Kd.T @ (np.zeros((W.shape[0], K)) - W @ T)
        loc.append(S); M.append(T)
    starts, fin2 = [None]*len(segs), []
    for n in range(N):                   # 2. scan
        S = S0[n].copy()
        for p in range(P):
            e = n * P + p; starts[e] = S; S = M[e] @ S + loc[e]
        fin2.append(S)
    hst2, R2 = [None]*len(chunks), [None]*len(chunks)
    for e, (n, c0, nc) in enumerate(segs):  # 3. rerun
        S = starts[e]
        for c in range(c0, c0 + nc):
            hst2[c] = S; S, R2[c] = step(S, chunks[c])
    err = lambda a, b: max([np.abs(x - y).max() / (np.abs(y).max() + 1e-300) for x, y in zip(a, b)] + [0])
    e_ref = err(finals, finals_ref)
    return max(err(hst2, hst), err(R2, Rs), err(fin2, finals)), e_ref, max(np.abs(m).max() for m in M) if M else 0
for lens, K, V, P in [([1], 16, 8, 2), ([63], 16, 8, 3), ([64], 8, 8, 2), ([65], 16, 12, 2),
                      ([1000], 32, 16, 3), ([4097], 16, 8, 8), ([0, 130, 0, 1, 700], 16, 8, 4),
                      ([0], 8, 8, 2), ([200, 0], 24, 8, 16)]:
    for s0 in (True, False):
        d, r, mx = run(lens, K, V, P, s0)
        print(f"lens {lens} K {K} V {V} P {P} s0 {s0}: split vs sequential {d:.2e}, chunk vs token {r:.2e}, max|M| {mx:.3f}")
        assert d < 1e-9 and r < 1e-9
print("ok")
for gm, bs in [('zero', (1.99,)), ('zero', (1.0,)), ('small', (0, 1, 1.99))]:
    d, r, mx = run([2000, 333], 16, 8, 5, True, gmode=gm, bset=bs)
    print(f"gates {gm} beta {bs}: split vs sequential {d:.2e}, chunk vs token {r:.2e}, max|M| {mx:.3f}")
    assert d < 1e-9 and r < 1e-9 and mx <= 1 + 1e-9
