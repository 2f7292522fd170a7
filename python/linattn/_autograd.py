"""torch.autograd.Functions over the raw calls: forward calls the C forward,
backward the C backward (which recomputes what it needs, so the saved tensors
are exactly the float32 inputs). Calls that need no graph (no_grad, or no
input requiring grad) bypass the Functions and save nothing.

The delta rules (DeltaNet, Gated DeltaNet) and, on CPU tensors, simple GLA
(cpu-sgsaved13: its chunk start states), GLA (cpu-glsaved17), KDA
(cpu-kdasaved19: start states and M, U, W, R, P) and causal
kernel linear attention (py-linsaved17: the same) in the chunk form also keep the
forward's per-chunk products for the backward in a la_saved object when
cfg["save_for_backward"] asks for it (None, the default: CPU tensors only;
True: CPU and CUDA tensors (cuda-saved7: device memory); see functional.py): the
backward then skips its re-run of the forward sweep, with the same gradient
bits. The object comes from the context's pool and goes back after the
backward, or when the graph is freed without one.
"""

import torch

from . import _ops
from ._core import torch_xp as TorchXP
from . import _core

_SAVING_FAMILIES = ("delta_rule", "gated_delta_rule", "simple_gla", "gla", "kda")
# cpu-sgsaved13: CUDA simple GLA ignores la_saved (include/linattn.h)
_CUDA_SAVING_FAMILIES = ("delta_rule", "gated_delta_rule")


def _borrow_saved(cfg, xp):
    """A SavedForBackward for this forward, or None."""
    want = cfg.get("save_for_backward")  # None: CPU tensors only
    if want is False or cfg["family"] not in _SAVING_FAMILIES:
        return None
    if xp.cuda and (want is not True or cfg["family"] not in _CUDA_SAVING_FAMILIES):
        return None  # device memory: opt-in (README)
    if cfg["form"] != "chunk" or not _core.saved_available():
        return None
    if xp.cuda and torch.cuda.is_current_stream_capturing():
        # cuda-graph24: a pooled object's device block could neither grow in
        # a capture nor stay reserved for the graph's replays; recompute
        return None
    if xp.cuda:  # cuda-saved7: device memory of the CUDA context of this stream
        return _core.SavedForBackward(_core.cuda_context_object(xp.device))
    return _core.SavedForBackward(_core.cpu_context_object())


def _borrow_linear_saved(cfg, xp):
    """py-linsaved17: kernel linear attention, causal chunk form, CPU tensors
    (a CUDA context ignores la_linear_attn_opts.saved): the chunk start
    states. save_for_backward None (default) or True: on; False: off."""
    if cfg.get("save_for_backward") is False or xp.cuda or not cfg["causal"]:
        return None
    if cfg["form"] != "chunk" or not _core.saved_available():
        return None
    return _core.SavedForBackward(_core.cpu_context_object())


def _linear_kw(cfg):
    """cfg less the keys linear_forward / linear_backward do not take."""
    return {n: x for n, x in cfg.items() if n != "save_for_backward"}


def _needs_graph(*xs):
    if not torch.is_grad_enabled():
        return False
    return any(isinstance(x, torch.Tensor) and x.requires_grad for x in xs)


class GatedFunction(torch.autograd.Function):
    """simple GLA, GLA, DeltaNet, Gated DeltaNet, KDA (cfg.family)."""

    @staticmethod
    def forward(ctx, cfg, q, k, v, g, g_gamma, beta, h0):
        xp = TorchXP(q.device, v.dtype)
        fam = cfg["family"]
        prep = _ops.gated_prepare(xp, fam, q, k, v, g, g_gamma, beta, h0, cfg["cu_seqlens"])
        sv = _borrow_saved(cfg, xp)
        o, ht = _ops.gated_forward(fam, None, None, None, form=cfg["form"], scale=cfg["scale"],
                                   chunk_size=cfg["chunk_size"],
                                   use_qk_l2norm=cfg["use_qk_l2norm"],
                                   output_final_state=cfg["output_final_state"], xp=xp,
                                   prepared=prep, saved=None if sv is None else sv.handle)
        ctx.saved_products = sv
        ctx.save_for_backward(*prep[:7])
        ctx.dims = prep[7]
        ctx.cfg = cfg
        ctx.in_dtypes = [None if x is None else x.dtype for x in (q, k, v, g, g_gamma, beta, h0)]
        return xp.out(o), ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, g_gamma, beta, h0 = ctx.saved_tensors
        cfg = ctx.cfg
        if do is None:
            do = torch.zeros_like(v)
        need = ctx.needs_input_grad
        xp = TorchXP(q.device, v.dtype)
        sv = getattr(ctx, "saved_products", None)
        handle = None
        # cuda-fix24: a backward captured in a CUDA graph after an eager
        # forward would read a pooled block that goes back to the pool when
        # this backward returns (and is refilled before the replays): recompute
        capturing = xp.cuda and torch.cuda.is_current_stream_capturing()
        # only on the context that filled it (a backward on another thread
        # has its own context: it recomputes, with the same bits)
        if sv is not None and sv.handle is not None and \
                sv.context is _core.cpu_context_object():
            handle = sv.handle
        elif sv is not None and sv.handle is not None and xp.cuda and \
                not capturing and \
                getattr(sv.context, "stream", None) == \
                torch.cuda.current_stream(q.device).cuda_stream:
            # cuda-saved7: autograd runs a CUDA backward on its device thread,
            # whose context is another one; this call goes to the forward's
            # (same device and stream; a CUDA context keeps no per-call state)
            handle = sv.handle
            xp = _core.xp_on_context(xp, sv.context.handle)
        try:
            r = _ops.gated_backward(cfg["family"], do, dht, None, None, None,
                                    form=cfg["form"], scale=cfg["scale"],
                                    chunk_size=cfg["chunk_size"],
                                    use_qk_l2norm=cfg["use_qk_l2norm"],
                                    need_dh0=h0 is not None and need[7],
                                    need_dg_gamma=g_gamma is not None and need[5],
                                    xp=xp, prepared=(q, k, v, g, g_gamma, beta, h0, ctx.dims),
                                    saved=handle)
        finally:
            if sv is not None:
                sv.release()
                ctx.saved_products = None
        grads = [r["dq"], r["dk"], r["dv"], r.get("dg"), r.get("dg_gamma"), r.get("dbeta"),
                 r.get("dh0")]
        out = [None]
        for i, (gr, dt) in enumerate(zip(grads, ctx.in_dtypes)):
            out.append(None if gr is None or dt is None or not need[i + 1] else
                       (gr if gr.dtype == dt else gr.to(dt)))
        return tuple(out)


def gated(cfg, q, k, v, g, g_gamma, beta, h0):
    """(o, final_state or None) for torch tensors, with autograd when needed."""
    if _needs_graph(q, k, v, g, g_gamma, beta, h0):
        return GatedFunction.apply(cfg, q, k, v, g, g_gamma, beta, h0)
    xp = TorchXP(q.device, v.dtype)
    o, ht = _ops.gated_forward(cfg["family"], q, k, v, g, g_gamma, beta, h0, form=cfg["form"],
                               scale=cfg["scale"], chunk_size=cfg["chunk_size"],
                               use_qk_l2norm=cfg["use_qk_l2norm"], cu_seqlens=cfg["cu_seqlens"],
                               output_final_state=cfg["output_final_state"], xp=xp)
    return xp.out(o), ht


class LinearFunction(torch.autograd.Function):
    """Kernel (feature-map) linear attention: (o, final_state, final_norm)."""

    @staticmethod
    def forward(ctx, cfg, q, k, v, h0, z0):
        xp = TorchXP(q.device, v.dtype)
        qc, kc, vc, h0c, z0c, d = _ops.linear_prepare(xp, q, k, v, h0, z0, cfg["normalize"],
                                                      cfg["cu_seqlens"])
        sv = _borrow_linear_saved(cfg, xp)
        o, ht, zt = _ops.linear_forward(qc, kc, vc, h0c, z0c, xp=xp,
                                        saved=None if sv is None else sv.handle,
                                        **_linear_kw(cfg))
        ctx.saved_products = sv
        # the backward passes these same buffers (the la_saved key compares
        # the input pointers)
        ctx.save_for_backward(qc, kc, vc, h0c, z0c)
        ctx.cfg = cfg
        ctx.in_dtypes = [None if x is None else x.dtype for x in (q, k, v, h0, z0)]
        return xp.out(o), ht, zt

    @staticmethod
    def backward(ctx, do, dht, dzt):
        q, k, v, h0, z0 = ctx.saved_tensors
        cfg = _linear_kw(ctx.cfg)
        cfg.pop("output_final_state", None)
        cfg.pop("output_final_norm", None)
        if do is None:
            do = torch.zeros_like(v)
        need = ctx.needs_input_grad
        sv = getattr(ctx, "saved_products", None)
        # only on the context that filled it (another thread's context
        # recomputes, with the same bits)
        handle = sv.handle if sv is not None and \
            sv.context is _core.cpu_context_object() else None
        try:
            r = _ops.linear_backward(do, dht, dzt, q, k, v, h0, z0,
                                     need_dh0=h0 is not None and need[4],
                                     need_dz0=z0 is not None and need[5],
                                     xp=TorchXP(q.device, v.dtype), saved=handle, **cfg)
        finally:
            if sv is not None:
                sv.release()
                ctx.saved_products = None
        grads = [r["dq"], r["dk"], r["dv"], r["dh0"], r["dz0"]]
        out = [None]
        for i, (gr, dt) in enumerate(zip(grads, ctx.in_dtypes)):
            out.append(None if gr is None or dt is None or not need[i + 1] else gr.to(dt))
        return tuple(out)


def linear(cfg, q, k, v, h0, z0):
    if _needs_graph(q, k, v, h0, z0):
        return LinearFunction.apply(cfg, q, k, v, h0, z0)
    xp = TorchXP(q.device, v.dtype)
    o, ht, zt = _ops.linear_forward(q, k, v, h0, z0, xp=xp, **_linear_kw(cfg))
    return xp.out(o), ht, zt


class SoftmaxFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, cfg, q, k, v):
        xp = TorchXP(q.device, v.dtype)
        qc, kc, vc, _, _ = _ops.softmax_prepare(xp, q, k, v, cfg["kv_lens"], cfg["cu_seqlens"])
        o, lse = _ops.softmax_forward(qc, kc, vc, xp=xp, **cfg)
        ctx.save_for_backward(qc, kc, vc)
        ctx.cfg = cfg
        ctx.in_dtypes = (q.dtype, k.dtype, v.dtype)
        if lse is not None:
            ctx.mark_non_differentiable(lse)
        return xp.out(o), lse

    @staticmethod
    def backward(ctx, do, dlse):
        q, k, v = ctx.saved_tensors
        cfg = dict(ctx.cfg)
        cfg.pop("return_lse")
        r = _ops.softmax_backward(do, q, k, v, xp=TorchXP(q.device, v.dtype), **cfg)
        need = ctx.needs_input_grad
        return (None,) + tuple(r[n].to(dt) if need[i + 1] else None
                               for i, (n, dt) in enumerate(zip(("dq", "dk", "dv"),
                                                               ctx.in_dtypes)))


def softmax(cfg, q, k, v):
    if _needs_graph(q, k, v):
        return SoftmaxFunction.apply(cfg, q, k, v)
    xp = TorchXP(q.device, v.dtype)
    o, lse = _ops.softmax_forward(q, k, v, xp=xp, **cfg)
    return xp.out(o), lse


class RandomFeatureFunction(torch.autograd.Function):
    """phi(x); no gradient into W (the projection is drawn, not learned)."""

    @staticmethod
    def forward(ctx, cfg, x, W):
        xp = TorchXP(x.device, x.dtype)
        xc = xp.f32(x, "x")
        Wc = xp.f32(W, "W")
        phi = _ops.rf_forward(xc, Wc, xp=xp, **cfg)
        ctx.save_for_backward(xc, Wc)
        ctx.cfg = cfg
        ctx.x_dtype = x.dtype
        return xp.out(phi)

    @staticmethod
    def backward(ctx, dphi):
        x, W = ctx.saved_tensors
        dx = _ops.rf_backward(dphi, x, W, xp=TorchXP(x.device, x.dtype), **ctx.cfg)
        return None, dx.to(ctx.x_dtype) if ctx.needs_input_grad[1] else None, None


def random_features(cfg, x, W):
    if _needs_graph(x):
        return RandomFeatureFunction.apply(cfg, x, W)
    xp = TorchXP(x.device, x.dtype)
    return xp.out(_ops.rf_forward(x, W, xp=xp, **cfg))


class PerformerFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, cfg, q, k, v, W):
        xp = TorchXP(q.device, v.dtype)
        qc, kc, vc, Wc, _ = _ops.performer_prepare(xp, q, k, v, W, cfg["cu_seqlens"])
        o = _ops.performer_forward(qc, kc, vc, Wc, xp=xp, **cfg)
        ctx.save_for_backward(qc, kc, vc, Wc)
        ctx.cfg = cfg
        ctx.in_dtypes = (q.dtype, k.dtype, v.dtype)
        return xp.out(o)

    @staticmethod
    def backward(ctx, do):
        q, k, v, W = ctx.saved_tensors
        r = _ops.performer_backward(do, q, k, v, W, xp=TorchXP(q.device, v.dtype), **ctx.cfg)
        need = ctx.needs_input_grad
        return (None,) + tuple(r[n].to(dt) if need[i + 1] else None
                               for i, (n, dt) in enumerate(zip(("dq", "dk", "dv"),
                                                               ctx.in_dtypes))) + (None,)


def performer(cfg, q, k, v, W):
    if _needs_graph(q, k, v):
        return PerformerFunction.apply(cfg, q, k, v, W)
    xp = TorchXP(q.device, v.dtype)
    return xp.out(_ops.performer_forward(q, k, v, W, xp=xp, **cfg))
