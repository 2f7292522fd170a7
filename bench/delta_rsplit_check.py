#!/usr/bin/env python3
"""cuda-drsplit18: float64 check of the algebra of the delta rules' REVERSE
state-gradient pass split over time (the reverse of cuda-split9's forward
split, bench/delta_split_check.py, whose chunk prep and segment table it
reuses), before any kernel. Per chunk c (delta_chunk_bwd.cu):
    dR = dRo + Kd dh',   dh = b_L dh' + Qt^T dO - W^T dR
       = A_c^T dh' + X_c,   A_c^T = b_L I - W^T Kd,   X_c = Qt^T dO - W^T dRo
(dRo = P^T dO), so a segment's start gradient is N_p dh_end + loc_p with
N_p = A_first^T .. A_last^T. Checked against the sequential reverse chunk
pass (every dh' per chunk, dR per chunk, d_initial_state):
  1. local pass per segment from dh' = 0 at its end, chunks backwards;
     transition N_p as ceil(K / 16) extra column blocks from the identity
     with dRo = 0, dO = 0 (the same step computes A_c^T N);
  2. scan from the last segment backwards: end(P - 1) = d_final_state (or
     0), end(p - 1) = N_p end(p) + loc_p, d_initial_state = N_0 end(0) +
     loc_0;
  3. rerun per segment from its true end gradient (dh' and dR per chunk).
Variant 2' (what a kernel would take to save work): the last segment runs
straight from d_final_state in step 1 (no local / transition of its own)
and the first segment needs no transition. The chunk pass itself is checked
against the token-level reverse recurrence G_{t-1} = A_t^T (q_t dO_t^T +
G_t), A_t = e^{g_t} (I - beta_t k_t k_t^T) (unit-norm q, k, scale 1).
Varlen with zero-length sequences, d_final_state given or not, initial
state given or not (the forward states feed only dq etc., not this pass,
but the chunk forward is run with it), gates -1e4 and g = 0, beta in {0, 1,
1.99}, P from 2 to 16 with empty segments.

    python3 bench/delta_rsplit_check.py
"""
import numpy as np

rng = np.random.default_rng(18)
C = 64


def prep(q, k, v, g, beta):
    # W = A diag(beta e^gam) K, U = A diag(beta) V, Kd = e^{gam_L - gam} k, bL = e^{gam_L},
    # Qt = diag(e^gam) Q, P = (Q K^T (.) e^{gam_m - gam_n}) on n <= m
    L = k.shape[0]
    gam = np.cumsum(g)
    kb = k * beta[:, None]
    with np.errstate(over='ignore', invalid='ignore'):  # the cut-off parts may be inf
        Dg = np.exp(gam[:, None] - gam[None, :])
        Lo = np.where(np.tri(L, k=-1) > 0, (kb @ k.T) * Dg, 0.0)
        Pm = np.where(np.tri(L) > 0, (q @ k.T) * Dg, 0.0)
    A = np.linalg.inv(np.eye(L) + Lo)
    W = A @ (kb * np.exp(gam)[:, None])
    U = A @ (v * beta[:, None])
    Kd = k * np.exp(gam[-1] - gam)[:, None]
    Qt = q * np.exp(gam)[:, None]
    return dict(W=W, U=U, Kd=Kd, bL=np.exp(gam[-1]), Qt=Qt, P=Pm)


MUTANT = False  # the check must fail when the transition is A_c (not transposed)


def rstep(dh1, ch, dO):
    # one reverse chunk step: dh' -> (dh, dR); dO None: the transition columns (dRo = 0, dO = 0)
    if dO is None and MUTANT:
        return ch['bL'] * dh1 - ch['Kd'].T @ (ch['W'] @ dh1), None
    dRo = ch['P'].T @ dO if dO is not None else 0.0
    dR = dRo + ch['Kd'] @ dh1
    X = ch['Qt'].T @ dO if dO is not None else 0.0
    return ch['bL'] * dh1 + X - ch['W'].T @ dR, dR


def token_rev(q, k, g, beta, dO, G):  # G: gradient wrt the final state; returns wrt the initial
    for t in range(k.shape[0] - 1, -1, -1):
        Gt = np.outer(q[t], dO[t]) + G
        G = np.exp(g[t]) * (Gt - beta[t] * np.outer(k[t], k[t] @ Gt))
    return G


def table(lens, P):
    segs, ch0 = [], 0
    for n, Ln in enumerate(lens):
        nch = (Ln + C - 1) // C
        cs = (nch + P - 1) // P
        for p in range(P):
            c0 = min(p * cs, nch)
            c1 = min(c0 + cs, nch)
            segs.append((n, ch0 + c0, c1 - c0))
        ch0 += nch
    return segs


def run(lens, K, V, P, dsT=True, gmode='mix', bset=(0, 1, 1.99)):
    N = len(lens)
    chunks, dOs = [], []
    GT = [rng.standard_normal((K, V)) if dsT else np.zeros((K, V)) for _ in lens]
    ds0_tok = []
    for n, Ln in enumerate(lens):
        unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
        q, k = unit(rng.standard_normal((Ln, K))), unit(rng.standard_normal((Ln, K)))
        v, dO = rng.standard_normal((Ln, V)), rng.standard_normal((Ln, V))
        g = np.zeros(Ln) if gmode == 'zero' else -np.abs(rng.standard_normal(Ln)) * 0.1
        if gmode == 'mix' and Ln:
            g[rng.integers(0, Ln, max(1, Ln // 1500))] = -1e4  # a few chunks cut
            g[rng.random(Ln) < 0.2] = 0.0
        beta = rng.choice(bset, Ln) if Ln else np.zeros(0)
        ds0_tok.append(token_rev(q, k, g, beta, dO, GT[n].copy()))
        for c0 in range(0, Ln, C):
            s = slice(c0, c0 + C)
            chunks.append(prep(q[s], k[s], v[s], g[s], beta[s]))
            dOs.append(dO[s])
    # sequential reverse chunk pass: dhst[c] = gradient of the state after chunk c
    nchs = [(Ln + C - 1) // C for Ln in lens]
    dhst, dRs, ds0 = [None] * len(chunks), [None] * len(chunks), []
    c1 = 0
    for n in range(N):
        c0, c1 = c1, c1 + nchs[n]
        D = GT[n].copy()
        for c in range(c1 - 1, c0 - 1, -1):
            dhst[c] = D
            D, dRs[c] = rstep(D, chunks[c], dOs[c])
        ds0.append(D)
    segs = table(lens, P)
    out = {}
    for skip in (False, True):  # skip: the last segment runs from d_final_state in step 1
        loc, Nt, done = [None] * len(segs), [None] * len(segs), [False] * len(segs)
        dh2, dR2 = [None] * len(chunks), [None] * len(chunks)
        for e, (n, c0, nc) in enumerate(segs):  # 1. local pass + transition
            p = e % P
            # skip: the segments ending at the sequence's end (its last non-empty one and the
            # empty ones after it) run from d_final_state here and are done
            done[e] = skip and c0 + nc == sum(nchs[:n + 1])
            D = GT[n].copy() if done[e] else np.zeros((K, V))
            T = None if (skip and (p == 0 or done[e])) else np.eye(K)
            for c in range(c0 + nc - 1, c0 - 1, -1):
                if done[e]:
                    dh2[c] = D
                D, dR = rstep(D, chunks[c], dOs[c])
                if done[e]:
                    dR2[c] = dR
                if T is not None:
                    T, _ = rstep(T, chunks[c], None)
            loc[e], Nt[e] = D, T
        ds0s, ends = [None] * N, [None] * len(segs)
        for n in range(N):  # 2. scan, p downwards
            E = GT[n].copy()
            for p in range(P - 1, -1, -1):
                e = n * P + p
                ends[e] = E
                if done[e]:
                    E = loc[e]  # its true start gradient
                elif Nt[e] is None:  # skip, first segment: the rerun gives its start
                    E = None
                else:
                    E = Nt[e] @ E + loc[e]
            ds0s[n] = E
        for e, (n, c0, nc) in enumerate(segs):  # 3. rerun from the true end gradient
            if done[e]:
                continue
            D = ends[e]
            for c in range(c0 + nc - 1, c0 - 1, -1):
                dh2[c] = D
                D, dR2[c] = rstep(D, chunks[c], dOs[c])
            if e % P == 0 and Nt[e] is None:
                ds0s[n] = D
        out[skip] = (dh2, dR2, ds0s, Nt)

    def err(a, b):
        return max([np.abs(x - y).max() / (np.abs(y).max() + 1e-300) for x, y in zip(a, b)] + [0])
    ds = max(max(err(o[0], dhst), err(o[1], dRs), err(o[2], ds0)) for o in out.values())
    mx = max([np.abs(m).max() for m in out[False][3]] + [0])
    return ds, err(ds0, ds0_tok), mx


if __name__ == "__main__":
    worst = 0.0
    for lens, K, V, P in [([1], 16, 8, 2), ([63], 16, 8, 3), ([64], 8, 8, 2), ([65], 16, 12, 2),
                          ([1000], 32, 16, 3), ([4097], 16, 8, 8), ([0, 130, 0, 1, 700], 16, 8, 4),
                          ([0], 8, 8, 2), ([200, 0], 24, 8, 16), ([3000, 64, 129], 16, 8, 16)]:
        for dsT in (True, False):
            d, r, mx = run(lens, K, V, P, dsT)
            worst = max(worst, d)
            print(f"lens {lens} K {K} V {V} P {P} dsT {dsT}: split vs sequential {d:.2e}, "
                  f"chunk vs token {r:.2e}, max|N| {mx:.3f}")
            assert d < 1e-12 and r < 1e-12
    for gm, bs in [('zero', (1.99,)), ('zero', (1.0,)), ('small', (0, 1, 1.99))]:
        d, r, mx = run([2000, 333], 16, 8, 5, True, gmode=gm, bset=bs)
        worst = max(worst, d)
        print(f"gates {gm} beta {bs}: split vs sequential {d:.2e}, chunk vs token {r:.2e}, "
              f"max|N| {mx:.3f}")
        assert d < 1e-12 and r < 1e-12 and mx <= 1 + 1e-9
    MUTANT = True
    d, r, mx = run([2000, 333], 16, 8, 5, True, gmode='zero', bset=(1.0,))
    print(f"mutant (transition A_c, not A_c^T): split vs sequential {d:.2e} (must fail)")
    assert d > 1e-3
    print(f"ok (worst split vs sequential {worst:.2e})")
