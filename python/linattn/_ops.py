"""Raw calls: one forward and one backward per op family, over numpy arrays
or torch tensors (see _core.NumpyXP / TorchXP), without autograd.

Each function checks every shape against the sizes it reads from q and v
before the C call (the C library trusts la_dims for buffer lengths), then
lets the library check values (finite inputs, gates <= 0, beta in [0, 2],
cu_seqlens) and turns a failing status into a Python exception.
Outputs are allocated uninitialised: the library writes every element.
"""

from . import _ffi
from ._core import backend, call, has_symbol, library_path


def _shape(x):
    return tuple(x.shape)


def expect(x, shape, name):
    if x.shape != shape:
        raise ValueError("%s has shape %s, expected %s" % (name, list(_shape(x)), list(shape)))


def _need(x, name, ndim):
    if x is None:
        raise ValueError("%s is required" % name)
    if len(x.shape) != ndim:
        raise ValueError("%s must have %d dimensions, got shape %s"
                         % (name, ndim, list(_shape(x))))


class Dims:
    """la_dims plus the arrays it points into (kept alive for the call)."""

    __slots__ = ("B", "T", "H", "K", "V", "HV", "N", "cu", "c")

    def __init__(self, xp, q, v, cu_seqlens, hv=False, kv_dims=True):
        qs = q.shape
        if len(qs) != 4:
            _need(q, "q", 4)
        B, T, H, K = qs
        if kv_dims:
            vs = v.shape
            if len(vs) != 4:
                _need(v, "v", 4)
            if vs[0] != B or vs[1] != T:
                raise ValueError("v has shape %s but q has %s: batch and time must agree"
                                 % (list(vs), list(qs)))
            HV, V = vs[2], vs[3]
        else:
            HV, V = H, 1
        if HV != H:
            if not hv:
                raise ValueError("v has %d heads but q has %d (value heads differ from q/k "
                                 "heads only in the delta rules with value heads)" % (HV, H))
            if H and HV % H:
                raise ValueError("value heads HV = %d must be a multiple of q/k heads H = %d"
                                 % (HV, H))
        self.B, self.T, self.H, self.K, self.V, self.HV = B, T, H, K, V, HV
        self.cu = None
        if cu_seqlens is None:
            self.N = B
            self.c = _ffi.la_dims(B, T, H, K, V, HV, None, 0, xp.dtype_code)
            return
        cu = xp.i64(cu_seqlens, "cu_seqlens")
        if len(cu.shape) != 1 or cu.shape[0] < 2:
            raise ValueError("cu_seqlens must be 1-D with at least 2 offsets, got shape %s"
                             % list(_shape(cu)))
        if B != 1:
            raise ValueError("cu_seqlens requires batch size B = 1 (sequences packed along "
                             "time), got B = %d" % B)
        self.cu = cu
        self.N = cu.shape[0] - 1
        self.c = _ffi.la_dims(B, T, H, K, V, HV, xp.ptr(cu), self.N, xp.dtype_code)


def _p(xp, x):
    return None if x is None else xp.ptr(x)


def _opt(xp, x, name, shape, state=False):
    if x is None:
        return None
    x = xp.state(x, name) if state else xp.f32(x, name)
    expect(x, shape, name)
    return x


# ------------------------------------------------------------ gated family

# g: None (no gate), "head" ([B,T,HV]) or "key" ([B,T,HV,K]).
GATED = {
    "simple_gla": {"g": "head", "beta": False, "hv": False, "fn": "la_simple_gla"},
    "gla": {"g": "key", "beta": False, "hv": False, "fn": "la_gla"},
    "delta_rule": {"g": None, "beta": True, "hv": False, "fn": "la_delta_rule"},
    "gated_delta_rule": {"g": "head", "beta": True, "hv": True, "fn": "la_gated_delta_rule"},
    "kda": {"g": "key", "beta": True, "hv": True, "fn": "la_kda"},
}


_GATED_OPTS = {}


def _gated_opts(form, scale, chunk_size, use_qk_l2norm):
    key = (form, scale, chunk_size, use_qk_l2norm)
    o = _GATED_OPTS.get(key)
    if o is not None:
        return o
    if len(_GATED_OPTS) > 256:
        _GATED_OPTS.clear()
    o = _GATED_OPTS[key] = _ffi.la_gated_opts()
    o.form = _ffi.FORM[form]
    o.scale = 0.0 if scale is None else float(scale)
    o.chunk_size = int(chunk_size or 0)
    o.use_qk_l2norm = 1 if use_qk_l2norm else 0
    return o


def _with_saved(opts, saved):
    """opts itself, or a copy carrying the la_saved handle (the cached
    structs are shared and must not keep one)."""
    if saved is None:
        return opts
    o = _ffi.la_gated_opts()
    _ffi.ctypes.pointer(o)[0] = opts
    o.saved = saved
    return o


def _check_family(family):
    if family == "kda" and not has_symbol("la_kda_forward"):
        raise NotImplementedError(
            "KDA needs the symbol la_kda_forward, which the loaded library %s does not have "
            "(build linattn with KDA)" % library_path)


def gated_prepare(xp, family, q, k, v, g, g_gamma, beta, h0, cu_seqlens):
    """Converted inputs and dims of one gated-family call."""
    spec = GATED[family]
    q = xp.f32(q, "q")
    d = Dims(xp, q, v, cu_seqlens, hv=spec["hv"])
    k = xp.f32(k, "k")
    v = xp.f32(v, "v")
    expect(k, _shape(q), "k")
    B, T, HV, K = d.B, d.T, d.HV, d.K
    if spec["g"] is None and g is not None:
        raise ValueError("%s takes no gate g" % family)
    # gates, beta and their gradients are float32 whatever q/k/v's dtype
    if spec["g"] == "head":
        g = _opt(xp, g, "g", (B, T, HV), state=True)
    elif spec["g"] == "key":
        _need(g, "g", 4)
        g = _opt(xp, g, "g", (B, T, HV, K), state=True)
    if g_gamma is not None and family != "simple_gla":
        raise ValueError("g_gamma is only for simple GLA")
    g_gamma = _opt(xp, g_gamma, "g_gamma", (d.H,), state=True)
    if spec["beta"]:
        _need(beta, "beta", 3)
        beta = _opt(xp, beta, "beta", (B, T, HV), state=True)
    elif beta is not None:
        raise ValueError("%s takes no beta" % family)
    h0 = _opt(xp, h0, "initial_state", (d.N, HV, K, d.V), state=True)
    return q, k, v, g, g_gamma, beta, h0, d


def gated_forward(family, q, k, v, g=None, g_gamma=None, beta=None, initial_state=None,
                  form="chunk", scale=None, chunk_size=0, use_qk_l2norm=False,
                  cu_seqlens=None, output_final_state=False, xp=None, prepared=None,
                  saved=None):
    """(o, final_state or None); o in the compute dtype (float32 on CPU).
    prepared: gated_prepare's result when the caller already has it; saved:
    a la_saved handle of xp's context the forward fills (delta rules, chunk
    form, CPU) or None."""
    _check_family(family)
    xp = xp or backend(q, v)
    if prepared is None:
        prepared = gated_prepare(xp, family, q, k, v, g, g_gamma, beta, initial_state,
                                 cu_seqlens)
    q, k, v, g, g_gamma, beta, h0, d = prepared
    o = xp.empty((d.B, d.T, d.HV, d.V))
    hT = xp.empty_state((d.N, d.HV, d.K, d.V)) if output_final_state else None
    opts = _with_saved(_gated_opts(form, scale, chunk_size, use_qk_l2norm), saved)
    P = xp.ptr
    args = [xp.context(), _ffi.ctypes.byref(opts), _ffi.ctypes.byref(d.c), P(o), _p(xp, hT),
            P(q), P(k), P(v)]
    if family == "simple_gla":
        args += [_p(xp, g), _p(xp, g_gamma)]
    elif family in ("gla", "gated_delta_rule", "kda"):
        args.append(_p(xp, g))
    if GATED[family]["beta"]:
        args.append(P(beta))
    args.append(_p(xp, h0))
    call(GATED[family]["fn"] + "_forward", *args)
    return o, hT


def gated_backward(family, do, dht, q, k, v, g=None, g_gamma=None, beta=None,
                   initial_state=None, form="chunk", scale=None, chunk_size=0,
                   use_qk_l2norm=False, cu_seqlens=None, need_dh0=True, need_dg_gamma=True,
                   xp=None, prepared=None, saved=None):
    """dict of gradients: dq, dk, dv and where they exist dg, dg_gamma, dbeta,
    dh0 (float32 / compute dtype). saved: the la_saved handle the forward of
    the same inputs filled, or None (recompute)."""
    _check_family(family)
    xp = xp or backend(q, v)
    if prepared is None:
        prepared = gated_prepare(xp, family, q, k, v, g, g_gamma, beta, initial_state,
                                 cu_seqlens)
    q, k, v, g, g_gamma, beta, h0, d = prepared
    do = xp.f32(do, "do")
    expect(do, (d.B, d.T, d.HV, d.V), "do")
    dht = _opt(xp, dht, "dht", (d.N, d.HV, d.K, d.V), state=True)
    out = {"dq": xp.empty(q.shape), "dk": xp.empty(k.shape), "dv": xp.empty(v.shape)}
    if g is not None:
        out["dg"] = xp.empty_state(g.shape)
    if family == "simple_gla" and need_dg_gamma:
        out["dg_gamma"] = xp.empty_state((d.H,))
    if beta is not None:
        out["dbeta"] = xp.empty_state(beta.shape)
    if need_dh0:
        out["dh0"] = xp.empty_state((d.N, d.HV, d.K, d.V))
    opts = _with_saved(_gated_opts(form, scale, chunk_size, use_qk_l2norm), saved)
    P = xp.ptr
    G = out.get
    args = [xp.context(), _ffi.ctypes.byref(opts), _ffi.ctypes.byref(d.c),
            P(out["dq"]), P(out["dk"]), P(out["dv"])]
    if family == "simple_gla":
        args += [_p(xp, G("dg")), _p(xp, G("dg_gamma"))]
    elif family in ("gla", "gated_delta_rule", "kda"):
        args.append(P(out["dg"]))
    if beta is not None:
        args.append(P(out["dbeta"]))
    args += [_p(xp, G("dh0")), P(do), _p(xp, dht), P(q), P(k), P(v)]
    if family == "simple_gla":
        args += [_p(xp, g), _p(xp, g_gamma)]
    elif family in ("gla", "gated_delta_rule", "kda"):
        args.append(P(g))
    if beta is not None:
        args.append(P(beta))
    args.append(_p(xp, h0))
    call(GATED[family]["fn"] + "_backward", *args)
    return out


# ------------------------------------------------------ kernel linear attention

def _linear_opts(feature_map, causal, form, normalize, eps, scale, chunk_size):
    o = _ffi.la_linear_attn_opts()
    if feature_map not in _ffi.FEATURE_MAP:
        raise ValueError("feature_map = %r (one of %s)" % (feature_map, sorted(_ffi.FEATURE_MAP)))
    if form not in _ffi.FORM:
        raise ValueError("form = %r (one of %s)" % (form, sorted(_ffi.FORM)))
    o.feature_map = _ffi.FEATURE_MAP[feature_map]
    o.causal = 1 if causal else 0
    o.form = _ffi.FORM[form]
    o.normalize = 1 if normalize else 0
    o.eps = float(eps)
    o.scale = 0.0 if scale is None else float(scale)
    o.chunk_size = int(chunk_size or 0)
    return o


def linear_prepare(xp, q, k, v, h0, z0, normalize, cu_seqlens):
    q = xp.f32(q, "q")
    d = Dims(xp, q, v, cu_seqlens)
    k = xp.f32(k, "k")
    v = xp.f32(v, "v")
    expect(k, _shape(q), "k")
    h0 = _opt(xp, h0, "initial_state", (d.N, d.H, d.K, d.V), state=True)
    if z0 is not None and not normalize:
        raise ValueError("initial_norm is only used with normalize=True")
    z0 = _opt(xp, z0, "initial_norm", (d.N, d.H, d.K), state=True)
    return q, k, v, h0, z0, d


def linear_forward(q, k, v, initial_state=None, initial_norm=None, feature_map="identity",
                   causal=True, form="chunk", normalize=False, eps=1e-6, scale=None,
                   chunk_size=0, cu_seqlens=None, output_final_state=False,
                   output_final_norm=None, xp=None, saved=None):
    """(o, final_state, final_norm); final_state only if output_final_state,
    final_norm only when normalize and output_final_norm (default: the same as
    output_final_state). saved: a la_saved handle of xp's CPU context the
    causal chunk forward fills (py-linsaved17; give the backward the same
    handle and the same q/k/v/initial_state/initial_norm buffers)."""
    if output_final_norm is None:
        output_final_norm = output_final_state
    xp = xp or backend(q, v)
    q, k, v, h0, z0, d = linear_prepare(xp, q, k, v, initial_state, initial_norm, normalize,
                                        cu_seqlens)
    opts = _linear_opts(feature_map, causal, form, normalize, eps, scale, chunk_size)
    opts.saved = saved
    o = xp.empty((d.B, d.T, d.H, d.V))
    hT = xp.empty_state((d.N, d.H, d.K, d.V)) if output_final_state else None
    zT = xp.empty_state((d.N, d.H, d.K)) if output_final_norm and normalize else None
    P = xp.ptr
    call("la_linear_attn_forward", xp.context(), _ffi.ctypes.byref(opts),
         _ffi.ctypes.byref(d.c), P(o), _p(xp, hT), _p(xp, zT), P(q), P(k), P(v), _p(xp, h0),
         _p(xp, z0))
    return o, hT, zT


def linear_backward(do, dht, dzt, q, k, v, initial_state=None, initial_norm=None,
                    feature_map="identity", causal=True, form="chunk", normalize=False,
                    eps=1e-6, scale=None, chunk_size=0, cu_seqlens=None, need_dh0=True,
                    need_dz0=True, xp=None, saved=None):
    """saved: the la_saved handle the forward of these same buffers filled."""
    xp = xp or backend(q, v)
    q, k, v, h0, z0, d = linear_prepare(xp, q, k, v, initial_state, initial_norm, normalize,
                                        cu_seqlens)
    opts = _linear_opts(feature_map, causal, form, normalize, eps, scale, chunk_size)
    opts.saved = saved
    do = xp.f32(do, "do")
    expect(do, _shape(v), "do")
    dht = _opt(xp, dht, "dht", (d.N, d.H, d.K, d.V), state=True)
    if dzt is not None and not normalize:
        raise ValueError("d_final_norm is only used with normalize=True")
    dzt = _opt(xp, dzt, "d_final_norm", (d.N, d.H, d.K), state=True)
    out = {"dq": xp.empty(_shape(q)), "dk": xp.empty(_shape(k)), "dv": xp.empty(_shape(v)),
           "dh0": xp.empty_state((d.N, d.H, d.K, d.V)) if need_dh0 else None,
           "dz0": xp.empty_state((d.N, d.H, d.K)) if need_dz0 and normalize else None}
    P = xp.ptr
    call("la_linear_attn_backward", xp.context(), _ffi.ctypes.byref(opts),
         _ffi.ctypes.byref(d.c), P(out["dq"]), P(out["dk"]), P(out["dv"]),
         _p(xp, out["dh0"]), _p(xp, out["dz0"]), P(do), _p(xp, dht), _p(xp, dzt), P(q), P(k),
         P(v), _p(xp, h0), _p(xp, z0))
    return out


# ------------------------------------------------------------ softmax

def _softmax_opts(causal, form, scale, block_size, kv_lens):
    o = _ffi.la_softmax_opts()
    if form not in _ffi.SOFTMAX_FORM:
        raise ValueError("form = %r (textbook or streaming)" % (form,))
    o.causal = 1 if causal else 0
    o.form = _ffi.SOFTMAX_FORM[form]
    o.scale = 0.0 if scale is None else float(scale)
    o.block_size = int(block_size or 0)
    o.kv_lens = None if kv_lens is None else kv_lens
    return o


def softmax_prepare(xp, q, k, v, kv_lens, cu_seqlens):
    q = xp.f32(q, "q")
    d = Dims(xp, q, v, cu_seqlens)
    k = xp.f32(k, "k")
    v = xp.f32(v, "v")
    expect(k, _shape(q), "k")
    kl = None
    if kv_lens is not None:
        kl = xp.i64(kv_lens, "kv_lens")
        expect(kl, (d.B,), "kv_lens")
    return q, k, v, kl, d


def softmax_forward(q, k, v, causal=True, form="streaming", scale=None, block_size=0,
                    kv_lens=None, cu_seqlens=None, return_lse=False, xp=None):
    xp = xp or backend(q, v)
    q, k, v, kl, d = softmax_prepare(xp, q, k, v, kv_lens, cu_seqlens)
    opts = _softmax_opts(causal, form, scale, block_size, _p(xp, kl))
    o = xp.empty((d.B, d.T, d.H, d.V))
    lse = xp.empty_state((d.B, d.T, d.H)) if return_lse else None
    P = xp.ptr
    call("la_softmax_attn_forward", xp.context(), _ffi.ctypes.byref(opts),
         _ffi.ctypes.byref(d.c), P(o), _p(xp, lse), P(q), P(k), P(v))
    return o, lse


def softmax_backward(do, q, k, v, causal=True, form="streaming", scale=None, block_size=0,
                     kv_lens=None, cu_seqlens=None, xp=None):
    xp = xp or backend(q, v)
    q, k, v, kl, d = softmax_prepare(xp, q, k, v, kv_lens, cu_seqlens)
    opts = _softmax_opts(causal, form, scale, block_size, _p(xp, kl))
    do = xp.f32(do, "do")
    expect(do, _shape(v), "do")
    out = {"dq": xp.empty(_shape(q)), "dk": xp.empty(_shape(k)), "dv": xp.empty(_shape(v))}
    P = xp.ptr
    call("la_softmax_attn_backward", xp.context(), _ffi.ctypes.byref(opts),
         _ffi.ctypes.byref(d.c), P(out["dq"]), P(out["dk"]), P(out["dv"]), P(do), P(q), P(k),
         P(v))
    return out


# ------------------------------------------------------------ random features

def _rf_opts(kind, role, stabilize, eps):
    o = _ffi.la_rf_opts()
    if kind not in _ffi.RANDOM_FEATURE:
        raise ValueError("kind = %r (one of %s)" % (kind, sorted(_ffi.RANDOM_FEATURE)))
    if role not in _ffi.RF_ROLE:
        raise ValueError("role = %r (query or key)" % (role,))
    o.kind = _ffi.RANDOM_FEATURE[kind]
    o.role = _ffi.RF_ROLE[role]
    o.stabilize = 1 if stabilize else 0
    o.eps = float(eps)
    return o


def num_features(kind, m):
    """Features M that a random-feature map of this kind makes from m rows."""
    if kind not in _ffi.RANDOM_FEATURE:
        raise ValueError("kind = %r (one of %s)" % (kind, sorted(_ffi.RANDOM_FEATURE)))
    return int(_core_lib().la_rf_num_features(_ffi.RANDOM_FEATURE[kind], int(m)))


def _core_lib():
    from ._core import lib
    return lib


def _rf_prepare(xp, x, W, cu_seqlens):
    x = xp.f32(x, "x")
    d = Dims(xp, x, None, cu_seqlens, kv_dims=False)
    W = xp.f32(W, "W")
    _need(W, "W", 2)
    if W.shape[1] != d.K:
        raise ValueError("W has shape %s but x has head dimension %d" % (list(_shape(W)), d.K))
    return x, W, d


def rf_forward(x, W, kind="favor_positive", role="query", stabilize=True, eps=0.0,
               cu_seqlens=None, xp=None):
    xp = xp or backend(x, x)
    x, W, d = _rf_prepare(xp, x, W, cu_seqlens)
    m = W.shape[0]
    M = num_features(kind, m)
    phi = xp.empty((d.B, d.T, d.H, M))
    opts = _rf_opts(kind, role, stabilize, eps)
    call("la_rf_forward", xp.context(), _ffi.ctypes.byref(opts), _ffi.ctypes.byref(d.c),
         xp.ptr(phi), None, xp.ptr(x), xp.ptr(W), m)
    return phi


def rf_backward(dphi, x, W, kind="favor_positive", role="query", stabilize=True, eps=0.0,
                cu_seqlens=None, xp=None):
    xp = xp or backend(x, x)
    x, W, d = _rf_prepare(xp, x, W, cu_seqlens)
    m = W.shape[0]
    dphi = xp.f32(dphi, "d_phi")
    expect(dphi, (d.B, d.T, d.H, num_features(kind, m)), "d_phi")
    dx = xp.empty(_shape(x))
    opts = _rf_opts(kind, role, stabilize, eps)
    call("la_rf_backward", xp.context(), _ffi.ctypes.byref(opts), _ffi.ctypes.byref(d.c),
         xp.ptr(dx), xp.ptr(dphi), xp.ptr(x), xp.ptr(W), m)
    return dx


def performer_prepare(xp, q, k, v, W, cu_seqlens):
    q, k, v, _, _, d = linear_prepare(xp, q, k, v, None, None, True, cu_seqlens)
    W = xp.f32(W, "W")
    _need(W, "W", 2)
    if W.shape[1] != d.K:
        raise ValueError("W has shape %s but q has head dimension %d" % (list(_shape(W)), d.K))
    return q, k, v, W, d


def performer_forward(q, k, v, W, kind="favor_positive", stabilize=True, rf_eps=0.0,
                      causal=True, form="chunk", eps=1e-6, chunk_size=0, cu_seqlens=None,
                      xp=None):
    xp = xp or backend(q, v)
    q, k, v, W, d = performer_prepare(xp, q, k, v, W, cu_seqlens)
    rf = _rf_opts(kind, "query", stabilize, rf_eps)
    attn = _linear_opts("identity", causal, form, True, eps, None, chunk_size)
    o = xp.empty((d.B, d.T, d.H, d.V))
    P = xp.ptr
    call("la_performer_attn_forward", xp.context(), _ffi.ctypes.byref(rf),
         _ffi.ctypes.byref(attn), _ffi.ctypes.byref(d.c), P(o), P(q), P(k), P(v), P(W),
         W.shape[0])
    return o


def performer_backward(do, q, k, v, W, kind="favor_positive", stabilize=True, rf_eps=0.0,
                       causal=True, form="chunk", eps=1e-6, chunk_size=0, cu_seqlens=None,
                       xp=None):
    xp = xp or backend(q, v)
    q, k, v, W, d = performer_prepare(xp, q, k, v, W, cu_seqlens)
    rf = _rf_opts(kind, "query", stabilize, rf_eps)
    attn = _linear_opts("identity", causal, form, True, eps, None, chunk_size)
    do = xp.f32(do, "do")
    expect(do, _shape(v), "do")
    out = {"dq": xp.empty(_shape(q)), "dk": xp.empty(_shape(k)), "dv": xp.empty(_shape(v))}
    P = xp.ptr
    call("la_performer_attn_backward", xp.context(), _ffi.ctypes.byref(rf),
         _ffi.ctypes.byref(attn), _ffi.ctypes.byref(d.c), P(out["dq"]), P(out["dk"]),
         P(out["dv"]), P(do), P(q), P(k), P(v), P(W), W.shape[0])
    return out
