"""Constant-cost token-by-token decoding over la_decoder: the decoder owns the
state of N sequences (slots); each step costs O(K V) per head whatever the
position. A Decoder is not shared between threads without a lock (it holds
one itself, so concurrent steps are serialised, never corrupted)."""

import ctypes
import threading

import numpy as np

from . import _ffi, _ops
from ._core import _torch as torch, backend, call, has_symbol, lib

_OPS = ("linear_attn", "simple_gla", "gla", "delta_rule", "gated_delta_rule", "kda")


class Decoder:
    """op: "linear_attn", "simple_gla", "gla", "delta_rule",
    "gated_delta_rule" (or "kda" once the library has it). N slots, H q/k
    heads, HV value heads (gated delta rule; None = H), K, V head sizes.
    linear_attn also takes feature_map and normalize (eps); the delta rules
    use_qk_l2norm. scale None = K^-1/2."""

    def __init__(self, op, N, H, K, V, HV=None, feature_map="identity", normalize=False,
                 eps=None, scale=None, use_qk_l2norm=False):
        if op not in _OPS:
            raise ValueError("op = %r (one of %s)" % (op, ", ".join(_OPS)))
        if feature_map not in _ffi.FEATURE_MAP:
            raise ValueError("feature_map = %r (one of %s)" % (feature_map,
                                                             sorted(_ffi.FEATURE_MAP)))
        cfg = _ffi.la_decoder_config()
        cfg.op = _ffi.OP[op]
        cfg.N, cfg.H, cfg.K, cfg.V = int(N), int(H), int(K), int(V)
        cfg.HV = int(HV or 0)
        cfg.feature_map = _ffi.FEATURE_MAP[feature_map]
        cfg.normalize = 1 if normalize else 0
        cfg.eps = 0.0 if eps is None else float(eps)
        if scale is not None and not float(scale) > 0:
            raise ValueError("scale = %r (must be > 0; None means K^-1/2)" % scale)
        cfg.scale = 0.0 if scale is None else float(scale)
        cfg.use_qk_l2norm = 1 if use_qk_l2norm else 0
        h = ctypes.c_void_p()
        call("la_decoder_create", ctypes.byref(h), ctypes.byref(cfg))
        self._h = h.value
        self._destroy = lib.la_decoder_destroy
        self._lock = threading.Lock()
        self.op, self.N, self.H, self.K, self.V = op, cfg.N, cfg.H, cfg.K, cfg.V
        self.HS = cfg.HV or cfg.H
        self.normalize = bool(normalize) and op == "linear_attn"

    def __del__(self):
        if getattr(self, "_h", None):
            self._destroy(self._h)
            self._h = None

    def close(self):
        self.__del__()

    def _handle(self):
        if not self._h:
            raise ValueError("Decoder is closed")
        return self._h

    def step(self, q, k, v, g=None, g_gamma=None, beta=None):
        """One token per slot: q, k [N, H, K]; v [N, HS, V]; g [N, HS] (simple GLA,
        gated delta rule) or [N, H, K] (GLA) or [N, HS, K] (KDA); g_gamma [H];
        beta [N, HS]. Returns o [N, HS, V] (numpy or torch, as q; v's dtype)."""
        xp = backend(q, v)
        N, H, HS, K, V = self.N, self.H, self.HS, self.K, self.V
        q, k, v = xp.f32(q, "q"), xp.f32(k, "k"), xp.f32(v, "v")
        _ops.expect(q, (N, H, K), "q")
        _ops.expect(k, (N, H, K), "k")
        _ops.expect(v, (N, HS, V), "v")
        gshape = {"simple_gla": (N, HS), "gated_delta_rule": (N, HS), "gla": (N, H, K),
                  "kda": (N, HS, K)}.get(self.op)
        if g is not None:
            if gshape is None:
                raise ValueError("%s takes no gate g" % self.op)
            g = xp.f32(g, "g")
            _ops.expect(g, gshape, "g")
        if g_gamma is not None:
            g_gamma = xp.f32(g_gamma, "g_gamma")
            _ops.expect(g_gamma, (H,), "g_gamma")
        if beta is not None:
            beta = xp.f32(beta, "beta")
            _ops.expect(beta, (N, HS), "beta")
        o = xp.empty((N, HS, V))
        p = _ops._p
        with self._lock:
            call("la_decoder_step", xp.context(), self._handle(), xp.ptr(o), xp.ptr(q),
                 xp.ptr(k), xp.ptr(v), p(xp, g), p(xp, g_gamma), p(xp, beta))
        return xp.out(o)

    def get_state(self, as_torch=False):
        """(state [N, HS, K, V], norm [N, H, K] or None) float32 copies."""
        S = np.empty((self.N, self.HS, self.K, self.V), np.float32)
        z = np.empty((self.N, self.H, self.K), np.float32) if self.normalize else None
        with self._lock:
            call("la_decoder_get_state", self._handle(), S.ctypes.data,
                 None if z is None else z.ctypes.data)
        if as_torch:
            return torch.from_numpy(S), None if z is None else torch.from_numpy(z)
        return S, z

    def set_state(self, state, norm=None):
        xp = backend(state)
        S = xp.f32(state, "state")
        _ops.expect(S, (self.N, self.HS, self.K, self.V), "state")
        if norm is not None:
            if not self.normalize:
                raise ValueError("norm is only for normalised linear attention")
            norm = xp.f32(norm, "norm")
            _ops.expect(norm, (self.N, self.H, self.K), "norm")
        with self._lock:
            call("la_decoder_set_state", self._handle(), xp.ptr(S),
                 None if norm is None else xp.ptr(norm))

    def reset(self):
        """Every slot back to the zero state."""
        with self._lock:
            call("la_decoder_reset", self._handle())

    def reset_slot(self, n):
        """Slot n back to the zero state (a new sequence starts there)."""
        n = self._slot(n)
        if has_symbol("la_decoder_reset_slot"):
            with self._lock:
                call("la_decoder_reset_slot", self._handle(), n)
            return
        S, z = self.get_state()  # older library: through the whole state
        S[n] = 0
        if z is not None:
            z[n] = 0
        self.set_state(S, z)

    def get_slot_state(self, n):
        """(state [HS, K, V], norm [H, K] or None) of slot n, float32 numpy."""
        n = self._slot(n)
        if not has_symbol("la_decoder_get_slot_state"):
            S, z = self.get_state()
            return S[n].copy(), None if z is None else z[n].copy()
        S = np.empty((self.HS, self.K, self.V), np.float32)
        z = np.empty((self.H, self.K), np.float32) if self.normalize else None
        with self._lock:
            call("la_decoder_get_slot_state", self._handle(), n, S.ctypes.data,
                 None if z is None else z.ctypes.data)
        return S, z

    def set_slot_state(self, n, state, norm=None):
        """Copy state [HS, K, V] (and norm [H, K]) into slot n."""
        n = self._slot(n)
        S = np.ascontiguousarray(_np(state), dtype=np.float32)
        _ops.expect(S, (self.HS, self.K, self.V), "state")
        z = None
        if norm is not None:
            if not self.normalize:
                raise ValueError("norm is only for normalised linear attention")
            z = np.ascontiguousarray(_np(norm), dtype=np.float32)
            _ops.expect(z, (self.H, self.K), "norm")
        if not has_symbol("la_decoder_set_slot_state"):
            S_all, z_all = self.get_state()
            S_all[n] = S
            if z is not None:
                z_all[n] = z
            self.set_state(S_all, z_all)
            return
        with self._lock:
            call("la_decoder_set_slot_state", self._handle(), n, S.ctypes.data,
                 None if z is None else z.ctypes.data)

    def _slot(self, n):
        n = int(n)
        if not 0 <= n < self.N:
            raise ValueError("slot n = %d (slots are 0..%d)" % (n, self.N - 1))
        return n


def _np(x):
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)
