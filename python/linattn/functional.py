"""linattn's own API: every function takes numpy arrays or torch tensors
(the output follows the input) and, for tensors, is differentiable through
the C backward.

Shapes follow fla: q, k [B, T, H, K]; v [B, T, HV, V]; states [N, HV, K, V]
(N = B, or the number of sequences when cu_seqlens is given with B = 1).
"""

import numpy as np

from . import _ops
from ._core import _torch as torch, backend, call, lib
from . import _ffi


def _is_torch(x):
    return torch is not None and isinstance(x, torch.Tensor)


def _scale(scale):
    if scale is None:
        return None
    scale = float(scale)
    if not scale > 0:
        raise ValueError("scale = %r (must be > 0; None means K^-1/2)" % scale)
    return scale


def gated_attention(family, q, k, v, g=None, g_gamma=None, beta=None, scale=None,
                    initial_state=None, output_final_state=False, cu_seqlens=None,
                    form="chunk", chunk_size=0, use_qk_l2norm=False, save_for_backward=None):
    """The gated / delta-rule family. family: "simple_gla" (g [B,T,H] and/or
    g_gamma [H]), "gla" (g [B,T,H,K]), "delta_rule" (beta [B,T,H]),
    "gated_delta_rule" (g, beta [B,T,HV]), "kda" (g [B,T,HV,K], beta [B,T,HV]).
    form: "chunk" or "recurrent". Returns (o, final_state or None).
    save_for_backward (delta rules, and simple GLA, GLA and KDA on CPU tensors; chunk
    form, tensors that need a gradient; None (default): on for CPU tensors,
    off for CUDA tensors; True / False: on / off for both): keep the
    forward's per-chunk products for the backward (la_saved) instead of
    recomputing them; the same gradients bit for bit, 2.3 KB per value head
    and token on CPU tensors (K = V = 128, chunk 64; 4.5x the size of q;
    CUDA 3.8 KB bf16 / 2.8 KB fp32; simple GLA: its chunk start states,
    1 KB; KDA 3.0 KB) held from the forward to the backward, and
    kept idle for the next graph afterwards (linattn.release_memory() frees
    it). Forward + backward of the delta rules 1.06-1.22x faster through
    this package at D = 128, T = 8192
    (bench/PYTHON.md, cpu-py7); False recomputes and holds nothing. Other
    families and forms ignore it."""
    if form not in ("chunk", "recurrent"):
        raise ValueError("form = %r (chunk or recurrent)" % (form,))
    if family not in _ops.GATED:
        raise ValueError("family = %r (one of %s)" % (family, sorted(_ops.GATED)))
    cfg = {"family": family, "form": form, "scale": _scale(scale),
           "chunk_size": int(chunk_size or 0), "use_qk_l2norm": bool(use_qk_l2norm),
           "cu_seqlens": cu_seqlens, "output_final_state": bool(output_final_state),
           "save_for_backward": None if save_for_backward is None else bool(save_for_backward)}
    if _is_torch(q):
        from . import _autograd
        return _autograd.gated(cfg, q, k, v, g, g_gamma, beta, initial_state)
    xp = backend(q, v)
    o, ht = _ops.gated_forward(family, q, k, v, g, g_gamma, beta, initial_state, form=form,
                               scale=cfg["scale"], chunk_size=cfg["chunk_size"],
                               use_qk_l2norm=use_qk_l2norm, cu_seqlens=cu_seqlens,
                               output_final_state=output_final_state, xp=xp)
    return xp.out(o), ht


def simple_gla(q, k, v, g=None, g_gamma=None, **kw):
    return gated_attention("simple_gla", q, k, v, g=g, g_gamma=g_gamma, **kw)


def gla(q, k, v, g, **kw):
    return gated_attention("gla", q, k, v, g=g, **kw)


def delta_rule(q, k, v, beta, **kw):
    return gated_attention("delta_rule", q, k, v, beta=beta, **kw)


def gated_delta_rule(q, k, v, g, beta, **kw):
    return gated_attention("gated_delta_rule", q, k, v, g=g, beta=beta, **kw)


def kda(q, k, v, g, beta, **kw):
    return gated_attention("kda", q, k, v, g=g, beta=beta, **kw)


def linear_attention(q, k, v, feature_map="elu1", causal=True, normalize=True, eps=1e-6,
                     scale=None, form="chunk", chunk_size=0, initial_state=None,
                     initial_norm=None, output_final_state=False, cu_seqlens=None,
                     save_for_backward=None):
    """Kernel (feature-map) linear attention, MATH.md section 2:
    o_t = phi(q_t) S_t / (phi(q_t).z_t + eps) (normalize) or scale phi(q_t) S_t.
    feature_map: "identity", "elu1", "relu". Non-causal when causal=False.
    Returns (o, final) with final = (S [N,H,K,V], z [N,H,K]) when normalize,
    else S; None unless output_final_state.
    save_for_backward (py-linsaved17; causal chunk form, CPU tensors that
    need a gradient; None (default) or True: on, False: off): the forward
    keeps every chunk's start state (la_saved, K (V + 1) / C floats per head
    and token) for the backward instead of recomputing them, with the same
    gradient bits; CUDA tensors and other forms ignore it."""
    cfg = {"feature_map": feature_map, "causal": bool(causal), "form": form,
           "normalize": bool(normalize), "eps": float(eps), "scale": _scale(scale),
           "chunk_size": int(chunk_size or 0), "cu_seqlens": cu_seqlens,
           "output_final_state": bool(output_final_state)}
    if _is_torch(q):
        from . import _autograd
        cfg["save_for_backward"] = None if save_for_backward is None else \
            bool(save_for_backward)
        o, ht, zt = _autograd.linear(cfg, q, k, v, initial_state, initial_norm)
    else:
        xp = backend(q, v)
        o, ht, zt = _ops.linear_forward(q, k, v, initial_state, initial_norm, xp=xp, **cfg)
        o = xp.out(o)
    if not output_final_state:
        return o, None
    return o, ((ht, zt) if normalize else ht)


def softmax_attention(q, k, v, causal=True, scale=None, form="streaming", block_size=0,
                      kv_lens=None, cu_seqlens=None, return_lse=False):
    """Exact softmax attention (the baseline). form: "streaming" (online
    softmax, O(T D) memory) or "textbook". kv_lens [B]: keys beyond are
    padding. Returns o, or (o, lse [B,T,H]) with return_lse."""
    cfg = {"causal": bool(causal), "form": form, "scale": _scale(scale),
           "block_size": int(block_size or 0), "kv_lens": kv_lens, "cu_seqlens": cu_seqlens,
           "return_lse": bool(return_lse)}
    if _is_torch(q):
        from . import _autograd
        o, lse = _autograd.softmax(cfg, q, k, v)
    else:
        xp = backend(q, v)
        o, lse = _ops.softmax_forward(q, k, v, xp=xp, **cfg)
        o = xp.out(o)
    return (o, lse) if return_lse else o


def draw_projection(m, d, kind="orthogonal", scaling="chi", seed=0, like=None):
    """W [m, d] for random features, drawn from seed (bit-identical on every
    machine). kind: "iid" or "orthogonal"; scaling: "chi" (unbiased) or
    "sqrt_d". A torch tensor when like is a tensor (on CPU), else numpy."""
    if kind not in _ffi.PROJ_KIND:
        raise ValueError("kind = %r (iid or orthogonal)" % (kind,))
    if scaling not in _ffi.PROJ_SCALING:
        raise ValueError("scaling = %r (chi or sqrt_d)" % (scaling,))
    m, d = int(m), int(d)
    if m < 1 or d < 1:
        raise ValueError("draw_projection: m = %d, d = %d (both must be >= 1)" % (m, d))
    W = np.empty((m, d), np.float32)
    call("la_projection_draw", W.ctypes.data, m, d, _ffi.PROJ_KIND[kind],
         _ffi.PROJ_SCALING[scaling], int(seed) & 0xFFFFFFFFFFFFFFFF)
    if _is_torch(like):
        return torch.from_numpy(W)
    return W


def num_features(kind, m):
    return _ops.num_features(kind, m)


def random_features(x, W, kind="favor_positive", role="query", stabilize=True, eps=0.0,
                    cu_seqlens=None):
    """phi(x) [B,T,H,M] (header section "Random features"): kind one of
    favor_positive, favor_hyperbolic, trig_gaussian, trig_softmax, relu; role
    query (stabiliser per token) or key (per sequence). Differentiable in x
    (the stabiliser held constant), not in W."""
    cfg = {"kind": kind, "role": role, "stabilize": bool(stabilize), "eps": float(eps),
           "cu_seqlens": cu_seqlens}
    if _is_torch(x):
        from . import _autograd
        return _autograd.random_features(cfg, x, W)
    xp = backend(x)
    return xp.out(_ops.rf_forward(x, W, xp=xp, **cfg))


def performer_attention(q, k, v, W, kind="favor_positive", stabilize=True, feature_eps=0.0,
                        causal=True, form="chunk", eps=1e-6, chunk_size=0, cu_seqlens=None):
    """Performer (FAVOR+) attention: normalised linear attention over random
    features of q and k from W [m, K] (see draw_projection)."""
    cfg = {"kind": kind, "stabilize": bool(stabilize), "rf_eps": float(feature_eps),
           "causal": bool(causal), "form": form, "eps": float(eps),
           "chunk_size": int(chunk_size or 0), "cu_seqlens": cu_seqlens}
    if _is_torch(q):
        from . import _autograd
        return _autograd.performer(cfg, q, k, v, W)
    xp = backend(q, v)
    return xp.out(_ops.performer_forward(q, k, v, W, xp=xp, **cfg))


def retnet_decay(H, like=None):
    """RetNet's per-head log-decay g_gamma[h] = log(1 - 2^(-5-h))."""
    H = int(H)
    if H < 1:
        raise ValueError("retnet_decay: H = %d (must be >= 1)" % H)
    out = np.empty((H,), np.float32)
    call("la_retnet_decay", out.ctypes.data, H)
    return torch.from_numpy(out) if _is_torch(like) else out


def isa():
    """The SIMD path the library runs ("portable", "avx2", "avx512")."""
    return lib.la_isa_name(lib.la_isa_active()).decode()
