"""fla's function names, argument names, defaults, shapes and return values
(flash-linear-attention, fla/ops/*), computed by the C library on the CPU.

Every function takes q, k [B, T, H, K], v [B, T, HV, V], returns (o, final_state)
with o in v's dtype and the final state float32 [N, HV, K, V] (None unless
output_final_state). scale=None means K^-1/2; cu_seqlens (B = 1, offsets
starting at 0, ending at T) packs sequences. numpy arrays work too.

Where fla and linattn differ:
  - fp32 inputs are accepted everywhere (fla's delta rules want half types).
  - ``reverse=True`` (fused_recurrent_* of linear attention, simple GLA, GLA)
    runs the forward scan on time-flipped sequences (per sequence with
    cu_seqlens), which is exactly fla's reverse scan; gradients flow through
    the flip.
  - ``state_v_first=True`` transposes the states to and from [.., V, K].
  - Options that would change the result and that we do not implement
    (value gate ``gv``, head-wise beta, ``return_intermediate_states``,
    ``head_first=True``, context parallelism) raise NotImplementedError;
    keyword arguments fla accepts only as kernel hints (chunk_size,
    cu_seqlens_cpu, chunk_indices, disable_recompute, ...) are accepted.
    Anything else raises TypeError.
  - scale must be > 0 (0 would be read as "default" by the C library).
"""

import numpy as np

from . import functional as F
from ._core import _torch as torch

# keyword arguments fla accepts that do not change the result here
_HINTS = {"chunk_size", "cu_seqlens_cpu", "chunk_indices", "disable_recompute",
          "head_first", "cp_context", "transpose_state_layout"}


def _check_kwargs(fname, kwargs):
    for key, val in kwargs.items():
        if key not in _HINTS:
            raise TypeError("%s() got an unexpected keyword argument %r" % (fname, key))
        if key == "head_first" and val:
            raise NotImplementedError("%s: head_first=True ([B, H, T, D] inputs) was removed from "
                                      "fla and is not supported; pass [B, T, H, D]" % fname)
        if key == "cp_context" and val is not None:
            raise NotImplementedError("%s: context parallelism (cp_context) is not supported"
                                      % fname)
    return int(kwargs.get("chunk_size") or 0)


def _is_torch(x):
    return torch is not None and isinstance(x, torch.Tensor)


def _swap_kv(x):
    if x is None:
        return None
    return x.transpose(-1, -2) if _is_torch(x) else np.swapaxes(x, -1, -2)


def _flip_index(T, cu_seqlens):
    """Token order that reverses each sequence in place."""
    if cu_seqlens is None:
        return None
    cu = np.asarray(cu_seqlens.cpu() if _is_torch(cu_seqlens) else cu_seqlens).astype(np.int64)
    if cu.ndim != 1 or len(cu) < 2 or cu[0] != 0 or cu[-1] != T or np.any(np.diff(cu) < 0):
        raise ValueError("cu_seqlens must start at 0, not decrease and end at T = %d, got %s"
                         % (T, cu.tolist()))
    idx = np.arange(T, dtype=np.int64)
    for s, e in zip(cu[:-1], cu[1:]):
        idx[s:e] = idx[s:e][::-1]
    return idx


def _flip(x, idx):
    if x is None:
        return None
    if _is_torch(x):
        if idx is None:
            return torch.flip(x, [1])
        return x.index_select(1, torch.as_tensor(idx, device=x.device))
    x = np.asarray(x)
    return x[:, ::-1] if idx is None else x[:, idx]


def _run(family, form, q, k, v, g=None, g_gamma=None, beta=None, scale=None,
         initial_state=None, output_final_state=False, cu_seqlens=None, reverse=False,
         state_v_first=False, use_qk_l2norm_in_kernel=False, chunk_size=0):
    if cu_seqlens is not None and initial_state is not None and \
            initial_state.shape[0] != len(cu_seqlens) - 1:
        raise ValueError("The number of initial states is expected to be equal to the number of "
                         "input sequences, i.e., %d rather than %d."
                         % (len(cu_seqlens) - 1, initial_state.shape[0]))
    if state_v_first:
        initial_state = _swap_kv(initial_state)
    idx = None
    if reverse:
        idx = _flip_index(q.shape[1], cu_seqlens)
        q, k, v, g, beta = (_flip(x, idx) for x in (q, k, v, g, beta))
    o, ht = F.gated_attention(family, q, k, v, g=g, g_gamma=g_gamma, beta=beta, scale=scale,
                              initial_state=initial_state, output_final_state=output_final_state,
                              cu_seqlens=cu_seqlens, form=form, chunk_size=chunk_size,
                              use_qk_l2norm=use_qk_l2norm_in_kernel)
    if reverse:
        o = _flip(o, idx)
    if state_v_first and ht is not None:
        ht = _swap_kv(ht)
    return o, ht


# ------------------------------------------------------------ helpers for gates

def _sigmoid(x):
    if _is_torch(x):
        return torch.sigmoid(x.float())
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float32)))


def _softplus(x):
    if _is_torch(x):
        return torch.nn.functional.softplus(x)
    return np.logaddexp(0.0, x).astype(np.float32)


def _exp(x):
    return torch.exp(x) if _is_torch(x) else np.exp(x)


def _f32(x):
    return x.float() if _is_torch(x) else np.asarray(x, np.float32)


def _beta(beta, v, use_beta_sigmoid_in_kernel, allow_neg_eigval, fname):
    if allow_neg_eigval and not use_beta_sigmoid_in_kernel:
        raise ValueError("`allow_neg_eigval=True` requires `use_beta_sigmoid_in_kernel=True`.")
    if beta is None:
        if use_beta_sigmoid_in_kernel:
            raise ValueError("%s: use_beta_sigmoid_in_kernel needs beta" % fname)
        shape = tuple(v.shape[:3])
        return torch.ones(shape, dtype=torch.float32, device=v.device) if _is_torch(v) \
            else np.ones(shape, np.float32)
    if len(beta.shape) == 4:
        raise NotImplementedError("%s: head-wise beta [B, T, H, V] is not supported; pass "
                                  "beta [B, T, H]" % fname)
    if use_beta_sigmoid_in_kernel:
        beta = _sigmoid(beta)
        if allow_neg_eigval:
            beta = beta * 2
    return beta


def _gate(g, A_log, dt_bias, lower_bound, per_key):
    """fla's in-kernel gate: -exp(A_log) * softplus(g + dt_bias), or with a
    lower bound, lower_bound * sigmoid(exp(A_log) * (g + dt_bias)). A_log [HV];
    dt_bias [HV] (scalar gates) or [HV*K] (per-key gates)."""
    if A_log is None and lower_bound is None:
        raise ValueError("`A_log` must be provided when `use_gate_in_kernel=True`.")
    g = _f32(g)
    if dt_bias is not None:
        b = _f32(dt_bias)
        if per_key:
            b = b.reshape(g.shape[2], g.shape[3])
        g = g + b
    a = None
    if A_log is not None:
        a = _exp(_f32(A_log))
        if per_key:
            a = a.reshape(-1, 1)
    if lower_bound is not None:
        return lower_bound * _sigmoid(g if a is None else a * g)
    return -a * _softplus(g)


# ------------------------------------------------------------ linear attention

def _linear(form, q, k, v, scale, initial_state, output_final_state, normalize, cu_seqlens,
            reverse=False):
    if scale is None:
        scale = q.shape[-1] ** -0.5
    scale = F._scale(scale)
    if normalize and isinstance(initial_state, tuple):
        kv0, z0 = initial_state
    else:
        kv0, z0 = initial_state, None
    if cu_seqlens is not None and q.shape[0] != 1:
        raise ValueError("The batch size is expected to be 1 rather than %d when using "
                         "`cu_seqlens`." % q.shape[0])
    if not normalize:
        return _run("simple_gla", form, q, k, v, scale=scale, initial_state=kv0,
                    output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                    reverse=reverse)
    # fla: o = (scale q S) / (scale q.z + 1e-10) with z the running key sum
    # (plus z0 [N, 1, H, K]); that is q S / (q.z + 1e-10 / scale).
    if z0 is not None:
        z0 = z0.reshape(z0.shape[0], z0.shape[2], z0.shape[3]) if len(z0.shape) == 4 else z0
    idx = None
    if reverse:
        idx = _flip_index(q.shape[1], cu_seqlens)
        q, k, v = (_flip(x, idx) for x in (q, k, v))
    cfg = {"feature_map": "identity", "causal": True, "form": form, "normalize": True,
           "eps": 1e-10 / scale, "scale": None, "chunk_size": 0, "cu_seqlens": cu_seqlens,
           "output_final_state": bool(output_final_state), "output_final_norm": True}
    if _is_torch(q):
        from . import _autograd
        o, ht, zt = _autograd.linear(cfg, q, k, v, kv0, z0)
    else:
        from . import _ops
        from ._core import backend
        xp = backend(q, v)
        o, ht, zt = _ops.linear_forward(q, k, v, kv0, z0, xp=xp, **cfg)
        o = xp.out(o)
    if reverse:
        o = _flip(o, idx)
    zt = zt.reshape(zt.shape[0], 1, zt.shape[1], zt.shape[2])
    return o, (ht, zt)


def chunk_linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False,
                      normalize=True, cu_seqlens=None, **kwargs):
    """fla.ops.linear_attn.chunk_linear_attn. normalize=True (fla's default
    here) returns (o, (kv_state, z_state [N, 1, H, K])) and takes
    initial_state as a tensor or a (kv, z) tuple."""
    _check_kwargs("chunk_linear_attn", kwargs)
    return _linear("chunk", q, k, v, scale, initial_state, output_final_state, normalize,
                   cu_seqlens)


def fused_chunk_linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False,
                            normalize=True, cu_seqlens=None, **kwargs):
    """fla.ops.linear_attn.fused_chunk_linear_attn (same as chunk_linear_attn)."""
    _check_kwargs("fused_chunk_linear_attn", kwargs)
    return _linear("chunk", q, k, v, scale, initial_state, output_final_state, normalize,
                   cu_seqlens)


def fused_recurrent_linear_attn(q, k, v, scale=None, initial_state=None,
                                output_final_state=False, reverse=False, normalize=False,
                                cu_seqlens=None, **kwargs):
    """fla.ops.linear_attn.fused_recurrent_linear_attn (normalize defaults to
    False here, as in fla)."""
    _check_kwargs("fused_recurrent_linear_attn", kwargs)
    return _linear("recurrent", q, k, v, scale, initial_state, output_final_state, normalize,
                   cu_seqlens, reverse=reverse)


# ------------------------------------------------------------ simple GLA / GLA

def chunk_simple_gla(q, k, v, g=None, g_gamma=None, scale=None, initial_state=None,
                     output_final_state=False, state_v_first=False, cu_seqlens=None,
                     **kwargs):
    """fla.ops.simple_gla.chunk_simple_gla: g [B, T, H] and/or g_gamma [H]."""
    cs = _check_kwargs("chunk_simple_gla", kwargs)
    return _run("simple_gla", "chunk", q, k, v, g=g, g_gamma=g_gamma, scale=scale,
                initial_state=initial_state, output_final_state=output_final_state,
                cu_seqlens=cu_seqlens, state_v_first=state_v_first, chunk_size=cs)


def fused_recurrent_simple_gla(q, k, v, g=None, g_gamma=None, scale=None, initial_state=None,
                               output_final_state=False, reverse=False, state_v_first=False,
                               cu_seqlens=None, **kwargs):
    """fla.ops.simple_gla.fused_recurrent_simple_gla."""
    _check_kwargs("fused_recurrent_simple_gla", kwargs)
    return _run("simple_gla", "recurrent", q, k, v, g=g, g_gamma=g_gamma, scale=scale,
                initial_state=initial_state, output_final_state=output_final_state,
                cu_seqlens=cu_seqlens, reverse=reverse, state_v_first=state_v_first)


def chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False,
              state_v_first=False, cu_seqlens=None, **kwargs):
    """fla.ops.gla.chunk_gla: g [B, T, H, K] log-space key gate."""
    cs = _check_kwargs("chunk_gla", kwargs)
    return _run("gla", "chunk", q, k, v, g=g, scale=scale, initial_state=initial_state,
                output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                state_v_first=state_v_first, chunk_size=cs)


def fused_recurrent_gla(q, k, v, gk=None, gv=None, scale=None, initial_state=None,
                        output_final_state=False, reverse=False, state_v_first=False,
                        cu_seqlens=None, **kwargs):
    """fla.ops.gla.fused_recurrent_gla: key gate gk [B, T, H, K] (None = no
    decay); the value gate gv is not supported (NotImplementedError)."""
    _check_kwargs("fused_recurrent_gla", kwargs)
    if gv is not None:
        raise NotImplementedError("fused_recurrent_gla: the value gate gv is not supported "
                                  "by linattn (only the key gate gk)")
    if gk is None:
        return _run("simple_gla", "recurrent", q, k, v, scale=scale,
                    initial_state=initial_state, output_final_state=output_final_state,
                    cu_seqlens=cu_seqlens, reverse=reverse, state_v_first=state_v_first)
    return _run("gla", "recurrent", q, k, v, g=gk, scale=scale, initial_state=initial_state,
                output_final_state=output_final_state, cu_seqlens=cu_seqlens, reverse=reverse,
                state_v_first=state_v_first)


# ------------------------------------------------------------ delta rules

def chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False,
                     use_qk_l2norm_in_kernel=False, cu_seqlens=None, **kwargs):
    """fla.ops.delta_rule.chunk_delta_rule: beta [B, T, H] in [0, 2]."""
    cs = _check_kwargs("chunk_delta_rule", kwargs)
    beta = _beta(beta, v, False, False, "chunk_delta_rule")
    return _run("delta_rule", "chunk", q, k, v, beta=beta, scale=scale,
                initial_state=initial_state, output_final_state=output_final_state,
                cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                chunk_size=cs)


def fused_recurrent_delta_rule(q, k, v, beta=None, scale=None, initial_state=None,
                               output_final_state=False, use_qk_l2norm_in_kernel=False,
                               cu_seqlens=None, **kwargs):
    """fla.ops.delta_rule.fused_recurrent_delta_rule: beta=None means ones."""
    _check_kwargs("fused_recurrent_delta_rule", kwargs)
    beta = _beta(beta, v, False, False, "fused_recurrent_delta_rule")
    return _run("delta_rule", "recurrent", q, k, v, beta=beta, scale=scale,
                initial_state=initial_state, output_final_state=output_final_state,
                cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel)


def chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None,
                           output_final_state=False, use_qk_l2norm_in_kernel=False,
                           use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False,
                           state_v_first=False, cu_seqlens=None, cu_seqlens_cpu=None,
                           chunk_indices=None, cp_context=None, **kwargs):
    """fla.ops.gated_delta_rule.chunk_gated_delta_rule: v [B, T, HV, V] with
    HV a multiple of H; g, beta [B, T, HV]; use_gate_in_kernel=True with A_log
    (and dt_bias) as keyword arguments applies fla's gate
    -exp(A_log) * softplus(g + dt_bias)."""
    use_gate = kwargs.pop("use_gate_in_kernel", False)
    A_log, dt_bias = kwargs.pop("A_log", None), kwargs.pop("dt_bias", None)
    cs = _check_kwargs("chunk_gated_delta_rule", dict(kwargs, cp_context=cp_context))
    if use_gate:
        g = _gate(g, A_log, dt_bias, None, per_key=False)
    beta = _beta(beta, v, use_beta_sigmoid_in_kernel, allow_neg_eigval,
                 "chunk_gated_delta_rule")
    return _run("gated_delta_rule", "chunk", q, k, v, g=g, beta=beta, scale=scale,
                initial_state=initial_state, output_final_state=output_final_state,
                cu_seqlens=cu_seqlens, state_v_first=state_v_first,
                use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, chunk_size=cs)


def fused_recurrent_gated_delta_rule(q, k, v, g=None, gk=None, gv=None, beta=None, scale=None,
                                     initial_state=None, output_final_state=False,
                                     use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False,
                                     A_log=None, dt_bias=None, use_beta_sigmoid_in_kernel=False,
                                     allow_neg_eigval=False, state_v_first=False,
                                     cu_seqlens=None, **kwargs):
    """fla.ops.gated_delta_rule.fused_recurrent_gated_delta_rule: g [B, T, HV]
    (None = no decay), beta=None means ones. A per-key gate gk makes this KDA
    (needs the library's la_kda_*); gv is not supported."""
    _check_kwargs("fused_recurrent_gated_delta_rule", kwargs)
    fname = "fused_recurrent_gated_delta_rule"
    if gv is not None:
        raise NotImplementedError("%s: the value gate gv is not supported by linattn" % fname)
    if gk is not None and g is not None:
        raise NotImplementedError("%s: g and gk together are not supported" % fname)
    beta = _beta(beta, v, use_beta_sigmoid_in_kernel, allow_neg_eigval, fname)
    family, gate, per_key = "gated_delta_rule", g, False
    if gk is not None:
        family, gate, per_key = "kda", gk, True
    if use_gate_in_kernel:
        if gate is None:
            raise ValueError("`g` (raw pre-activation) must be provided when "
                             "`use_gate_in_kernel=True`.")
        gate = _gate(gate, A_log, dt_bias, None, per_key=per_key)
    if gate is None:
        family = "delta_rule" if v.shape[2] == q.shape[2] else "gated_delta_rule"
        if family == "gated_delta_rule":
            gate = (torch.zeros(tuple(beta.shape), device=v.device) if _is_torch(v)
                    else np.zeros(tuple(beta.shape), np.float32))
    return _run(family, "recurrent", q, k, v, g=gate, beta=beta, scale=scale,
                initial_state=initial_state, output_final_state=output_final_state,
                cu_seqlens=cu_seqlens, state_v_first=state_v_first,
                use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel)


# ------------------------------------------------------------ KDA

def _kda(form, fname, q, k, v, g, beta, scale, initial_state, output_final_state,
         use_qk_l2norm_in_kernel, use_gate_in_kernel, use_beta_sigmoid_in_kernel,
         allow_neg_eigval, lower_bound, state_v_first, cu_seqlens, A_log, dt_bias, cs):
    if use_gate_in_kernel:
        g = _gate(g, A_log, dt_bias, lower_bound, per_key=True)
    elif lower_bound is not None:
        raise NotImplementedError("%s: lower_bound without use_gate_in_kernel (gate clamping) "
                                  "is not supported" % fname)
    beta = _beta(beta, v, use_beta_sigmoid_in_kernel, allow_neg_eigval, fname)
    return _run("kda", form, q, k, v, g=g, beta=beta, scale=scale, initial_state=initial_state,
                output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                state_v_first=state_v_first, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                chunk_size=cs)


def chunk_kda(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
              use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False,
              use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False, safe_gate=False,
              lower_bound=None, disable_recompute=False, return_intermediate_states=False,
              state_v_first=False, cu_seqlens=None, cu_seqlens_cpu=None, cp_context=None,
              **kwargs):
    """fla.ops.kda.chunk_kda: g [B, T, HV, K] per-key log gate, beta [B, T, HV]
    (needs the library's la_kda_forward / la_kda_backward)."""
    A_log, dt_bias = kwargs.pop("A_log", None), kwargs.pop("dt_bias", None)
    cs = _check_kwargs("chunk_kda", dict(kwargs, cp_context=cp_context))
    if return_intermediate_states:
        raise NotImplementedError("chunk_kda: return_intermediate_states is not supported")
    if safe_gate and not use_gate_in_kernel:
        raise NotImplementedError("chunk_kda: safe_gate without use_gate_in_kernel (gate "
                                  "clamping) is not supported")
    return _kda("chunk", "chunk_kda", q, k, v, g, beta, scale, initial_state,
                output_final_state, use_qk_l2norm_in_kernel, use_gate_in_kernel,
                use_beta_sigmoid_in_kernel, allow_neg_eigval, lower_bound, state_v_first,
                cu_seqlens, A_log, dt_bias, cs)


def fused_recurrent_kda(q, k, v, g, beta, A_log=None, dt_bias=None, scale=None,
                        initial_state=None, output_final_state=False,
                        use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False,
                        use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False,
                        lower_bound=None, state_v_first=False, cu_seqlens=None, **kwargs):
    """fla.ops.kda.fused_recurrent_kda."""
    _check_kwargs("fused_recurrent_kda", kwargs)
    return _kda("recurrent", "fused_recurrent_kda", q, k, v, g, beta, scale, initial_state,
                output_final_state, use_qk_l2norm_in_kernel, use_gate_in_kernel,
                use_beta_sigmoid_in_kernel, allow_neg_eigval, lower_bound, state_v_first,
                cu_seqlens, A_log, dt_bias, 0)


__all__ = ["chunk_linear_attn", "fused_chunk_linear_attn", "fused_recurrent_linear_attn",
           "chunk_simple_gla", "fused_recurrent_simple_gla", "chunk_gla", "fused_recurrent_gla",
           "chunk_delta_rule", "fused_recurrent_delta_rule", "chunk_gated_delta_rule",
           "fused_recurrent_gated_delta_rule", "chunk_kda", "fused_recurrent_kda"]
