#!/usr/bin/env python3
"""cuda-fused9: float64 check that the backward of kernel linear attention /
simple GLA is three calls of the forward's generic causal product (issue 10's
plan for the fused backward; not yet a kernel). For one sequence with
per-token log-gates g (decay a_t = e^{g_t}, entering at token t):

    prod(A, B, C, S0, g)  forward in time:  S_t = a_t S_{t-1} + B_t^T C_t,
                          out_t = A_t S_t;  returns (out, S_T)
    rprod(A, B, C, R, g)  reverse in time:  prod on the flipped sequence with
                          the gates shifted one token (a_{t+1} enters at t)
                          and the last step's a_1 applied to the end state.

    o             = prod(q, k, v, S0)                 (q carries the scale)
    dq, _         = prod(dO, v, k, S0^T)
    dv, dS0       = rprod(k, q, dO, dS_T)             (dS0: its end state)
    dk, _         = rprod(v, dO, q, dS_T^T)

checked against autograd-free finite differences of the loss
<o, dO> + <S_T, dS_T>. Prints the worst relative error; exits 1 above 1e-8.
"""
import sys

import numpy as np


def prod(A, B, C, S0, g):
    S, out = S0.copy(), np.empty((A.shape[0], C.shape[1]))
    for t in range(A.shape[0]):
        S = np.exp(g[t]) * S + np.outer(B[t], C[t])
        out[t] = A[t] @ S
    return out, S


def rprod(A, B, C, R, g):
    gs = np.concatenate([g[1:], [0.0]])[::-1]  # reversed order, a_{t+1} enters at t
    out, Rend = prod(A[::-1], B[::-1], C[::-1], R, gs)
    return out[::-1], np.exp(g[0]) * Rend


def loss(q, k, v, S0, g, dO, dST):
    o, ST = prod(q, k, v, S0, g)
    return (o * dO).sum() + (ST * dST).sum()


def main():
    rng = np.random.default_rng(7)
    T, K, V = 37, 5, 4
    q, k = rng.standard_normal((T, K)), rng.standard_normal((T, K))
    v, dO = rng.standard_normal((T, V)), rng.standard_normal((T, V))
    S0, dST = rng.standard_normal((K, V)), rng.standard_normal((K, V))
    g = -rng.random(T) * 0.5
    dq, _ = prod(dO, v, k, S0.T, g)
    dv, dS0 = rprod(k, q, dO, dST, g)
    dk, _ = rprod(v, dO, q, dST.T, g)
    worst = 0.0
    args = dict(q=q, k=k, v=v, S0=S0)
    for name, an in (("q", dq), ("k", dk), ("v", dv), ("S0", dS0)):
        x = args[name]
        num = np.zeros_like(x)
        for i in np.ndindex(x.shape):  # the loss is linear in each argument: exact differences
            xp = x.copy()
            xp[i] += 1.0
            num[i] = loss(**{**args, name: xp}, g=g, dO=dO, dST=dST) - loss(**args, g=g, dO=dO,
                                                                              dST=dST)
        err = np.abs(num - an).max() / np.abs(num).max()
        worst = max(worst, err)
        print("d%-3s rel max err %.2e" % (name, err))
    print("worst %.2e" % worst)
    return 0 if worst < 1e-8 else 1


if __name__ == "__main__":
    sys.exit(main())
