"""torch.nn layers over the linattn ops, as models use them (after fla's
fla/layers and fast-transformers' attention modules): projections, gates,
norms and (for the delta rules) a short causal convolution; ``forward`` runs
the chunkwise form for training / prefill, ``step`` one token with an explicit
state for decoding (``step`` over a sequence equals ``forward``).

Inputs are [B, T, hidden_size] (``cu_seqlens`` with B = 1 packs sequences);
``step`` takes [B, hidden_size] and a state (None to start), returns
(y [B, hidden_size], new_state).
"""

import torch
from torch import nn
from torch.nn import functional as F

from . import fla as _fla
from . import functional as _lf


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dimension; with ``gate``,
    times silu(gate) (fla's FusedRMSNormGated)."""

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x, gate=None):
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight
        return y if gate is None else y * F.silu(gate)


class ShortConvolution(nn.Module):
    """Depthwise causal convolution of width ``kernel_size`` followed by SiLU,
    sequence-boundary aware with cu_seqlens; ``step`` keeps the last inputs."""

    def __init__(self, dim, kernel_size=4):
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(dim, kernel_size))
        nn.init.kaiming_uniform_(self.weight.view(dim, 1, kernel_size), a=5 ** 0.5)

    def _conv(self, x):  # x [B, T, D]
        w = self.weight.unsqueeze(1)
        y = F.conv1d(F.pad(x.transpose(1, 2), (self.kernel_size - 1, 0)), w,
                     groups=self.weight.shape[0])
        return F.silu(y.transpose(1, 2))

    def forward(self, x, cu_seqlens=None):
        if cu_seqlens is None:
            return self._conv(x)
        cu = [int(c) for c in cu_seqlens]
        parts = [self._conv(x[:, s:e]) for s, e in zip(cu[:-1], cu[1:]) if e > s]
        return torch.cat(parts, 1) if parts else x

    def step(self, x, state):  # x [B, D]; state [B, D, kernel_size] or None
        if state is None:
            state = x.new_zeros(x.shape[0], x.shape[1], self.kernel_size)
        state = torch.cat([state[:, :, 1:], x.unsqueeze(-1)], -1)
        return F.silu((state * self.weight).sum(-1)), state


class _Attention(nn.Module):
    """Shared pieces: sizes, head split/merge."""

    def __init__(self, hidden_size, num_heads, head_k_dim, head_v_dim, num_v_heads=None):
        super().__init__()
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.num_v_heads = num_v_heads or num_heads
        if self.num_v_heads % num_heads:
            raise ValueError("num_v_heads = %d must be a multiple of num_heads = %d"
                             % (self.num_v_heads, num_heads))
        self.head_k_dim = head_k_dim
        self.head_v_dim = head_v_dim
        self.key_dim = num_heads * head_k_dim
        self.value_dim = self.num_v_heads * head_v_dim

    def _split(self, x, heads):
        return x.reshape(*x.shape[:-1], heads, -1)

    def _merge(self, x):
        return x.reshape(*x.shape[:-2], -1)


class LinearAttention(_Attention):
    """Kernel linear attention (Katharopoulos et al.; fast-transformers'
    LinearAttention / CausalLinearAttention): o = phi(q) S / (phi(q).z + eps).
    feature_map: "elu1" (default), "relu" or "identity"."""

    def __init__(self, hidden_size, num_heads=4, feature_map="elu1", causal=True,
                 normalize=True, eps=1e-6):
        hd = hidden_size // num_heads
        super().__init__(hidden_size, num_heads, hd, hd)
        self.feature_map, self.causal, self.normalize, self.eps = (feature_map, causal,
                                                                   normalize, eps)
        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)

    def _qkv(self, x):
        H = self.num_heads
        return (self._split(self.q_proj(x), H), self._split(self.k_proj(x), H),
                self._split(self.v_proj(x), H))

    def _attend(self, q, k, v, state, cu_seqlens, final):
        h0, z0 = state if (state is not None and self.normalize) else (state, None)
        return _lf.linear_attention(q, k, v, feature_map=self.feature_map, causal=self.causal,
                                    normalize=self.normalize, eps=self.eps, initial_state=h0,
                                    initial_norm=z0, output_final_state=final,
                                    cu_seqlens=cu_seqlens)

    def forward(self, x, cu_seqlens=None):
        q, k, v = self._qkv(x)
        o, _ = self._attend(q, k, v, None, cu_seqlens, False)
        return self.o_proj(self._merge(o))

    def step(self, x, state=None):
        if not self.causal:
            raise ValueError("step needs a causal layer")
        q, k, v = (t.unsqueeze(1) for t in self._qkv(x))
        o, state = self._attend(q, k, v, state, None, True)
        return self.o_proj(self._merge(o[:, 0])), state


class PerformerAttention(LinearAttention):
    """Performer (FAVOR+) attention: random features of q and k from a fixed
    projection W [num_features, head_dim] (a buffer, drawn from ``seed``;
    ``redraw(seed)`` draws a new one). ``step`` uses unstabilised key
    features, so it equals ``forward`` up to the attention eps."""

    def __init__(self, hidden_size, num_heads=4, num_features=None, kind="favor_positive",
                 orthogonal=True, seed=0, causal=True, eps=1e-6):
        super().__init__(hidden_size, num_heads, "identity", causal, True, eps)
        self.kind = kind
        self.num_features = num_features or self.head_k_dim
        self.orthogonal = orthogonal
        self.register_buffer("W", torch.empty(self.num_features, self.head_k_dim))
        self.redraw(seed)

    def redraw(self, seed):
        W = _lf.draw_projection(self.num_features, self.head_k_dim,
                                kind="orthogonal" if self.orthogonal else "iid", seed=seed,
                                like=self.W)
        with torch.no_grad():
            self.W.copy_(W)

    def forward(self, x, cu_seqlens=None):
        q, k, v = self._qkv(x)
        o = _lf.performer_attention(q, k, v, self.W, kind=self.kind, causal=self.causal,
                                    eps=self.eps, cu_seqlens=cu_seqlens)
        return self.o_proj(self._merge(o))

    def step(self, x, state=None):
        q, k, v = (t.unsqueeze(1) for t in self._qkv(x))
        pq = _lf.random_features(q, self.W, kind=self.kind, role="query")
        pk = _lf.random_features(k, self.W, kind=self.kind, role="key", stabilize=False)
        o, state = self._attend(pq, pk, v, state, None, True)
        return self.o_proj(self._merge(o[:, 0])), state


class GatedLinearAttention(_Attention):
    """GLA (Yang et al. 2023; fla.layers.GatedLinearAttention): per-key
    log-space forget gate from a low-rank projection,
    gk = logsigmoid(W2 W1 x) / gate_logit_normalizer, then RMSNorm of o times
    a swish output gate."""

    def __init__(self, hidden_size, num_heads=4, expand_k=0.5, expand_v=1.0,
                 gate_low_rank_dim=16, gate_logit_normalizer=16, norm_eps=1e-5):
        super().__init__(hidden_size, num_heads, int(hidden_size * expand_k) // num_heads,
                         int(hidden_size * expand_v) // num_heads)
        self.gate_logit_normalizer = gate_logit_normalizer
        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.g_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.gk_proj = nn.Sequential(nn.Linear(hidden_size, gate_low_rank_dim, bias=False),
                                     nn.Linear(gate_low_rank_dim, self.key_dim, bias=True))
        self.g_norm = RMSNorm(self.head_v_dim, norm_eps)
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)

    def _inputs(self, x):
        H = self.num_heads
        gk = F.logsigmoid(self.gk_proj(x)) / self.gate_logit_normalizer
        return (self._split(self.q_proj(x), H), self._split(self.k_proj(x), H),
                self._split(self.v_proj(x), H), self._split(gk, H))

    def _out(self, o, x):
        gate = self._split(self.g_proj(x), self.num_heads)
        return self.o_proj(self._merge(self.g_norm(o, gate)))

    def forward(self, x, cu_seqlens=None):
        q, k, v, gk = self._inputs(x)
        o, _ = _fla.chunk_gla(q, k, v, gk, cu_seqlens=cu_seqlens)
        return self._out(o, x)

    def step(self, x, state=None):
        q, k, v, gk = (t.unsqueeze(1) for t in self._inputs(x))
        o, state = _fla.fused_recurrent_gla(q, k, v, gk=gk, initial_state=state,
                                            output_final_state=True)
        return self._out(o[:, 0], x), state


class DeltaNet(_Attention):
    """DeltaNet (Schlag et al. 2021; Yang et al. 2024; fla.layers.DeltaNet):
    short convolutions with SiLU on q, k, v, L2-normalised q and k,
    beta = sigmoid(W_b x), RMSNorm on o (times a swish gate if use_gate)."""

    family = "delta_rule"

    def __init__(self, hidden_size, num_heads=4, expand_k=1.0, expand_v=1.0, num_v_heads=None,
                 use_short_conv=True, conv_size=4, use_gate=False, norm_eps=1e-5):
        super().__init__(hidden_size, num_heads, int(hidden_size * expand_k) // num_heads,
                         int(hidden_size * expand_v) // (num_v_heads or num_heads), num_v_heads)
        self.use_short_conv, self.use_gate = use_short_conv, use_gate
        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.b_proj = nn.Linear(hidden_size, self.num_v_heads, bias=False)
        if use_short_conv:
            self.q_conv = ShortConvolution(self.key_dim, conv_size)
            self.k_conv = ShortConvolution(self.key_dim, conv_size)
            self.v_conv = ShortConvolution(self.value_dim, conv_size)
        if use_gate:
            self.g_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.o_norm = RMSNorm(self.head_v_dim, norm_eps)
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)

    def _gate(self, x):
        return None

    def _qkv(self, x, cu_seqlens=None, conv=None):
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.use_short_conv:
            if conv is None and x.dim() == 3:
                q, k, v = (m(t, cu_seqlens) for m, t in
                           ((self.q_conv, q), (self.k_conv, k), (self.v_conv, v)))
            else:
                conv = conv or (None, None, None)
                (q, cq), (k, ck), (v, cv) = (m.step(t, s) for m, t, s in
                                             zip((self.q_conv, self.k_conv, self.v_conv),
                                                 (q, k, v), conv))
                conv = (cq, ck, cv)
        else:
            q, k, v = F.silu(q), F.silu(k), v
        H, HV = self.num_heads, self.num_v_heads
        return self._split(q, H), self._split(k, H), self._split(v, HV), conv

    def _out(self, o, x):
        gate = self._split(self.g_proj(x), self.num_v_heads) if self.use_gate else None
        return self.o_proj(self._merge(self.o_norm(o, gate)))

    def _op(self, form, q, k, v, g, beta, state, cu_seqlens, final):
        return _lf.gated_attention(self.family, q, k, v, g=g, beta=beta, initial_state=state,
                                   output_final_state=final, cu_seqlens=cu_seqlens, form=form,
                                   use_qk_l2norm=True)

    def forward(self, x, cu_seqlens=None):
        q, k, v, _ = self._qkv(x, cu_seqlens)
        beta = torch.sigmoid(self.b_proj(x))
        o, _ = self._op("chunk", q, k, v, self._gate(x), beta, None, cu_seqlens, False)
        return self._out(o, x)

    def step(self, x, state=None):
        conv, rec = state if state is not None else (None, None)
        q, k, v, conv = self._qkv(x, conv=conv if self.use_short_conv else None)
        beta = torch.sigmoid(self.b_proj(x))
        g = self._gate(x)
        o, rec = self._op("recurrent", q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1),
                          None if g is None else g.unsqueeze(1), beta.unsqueeze(1), rec, None,
                          True)
        return self._out(o[:, 0], x), (conv, rec)


class GatedDeltaNet(DeltaNet):
    """Gated DeltaNet (Yang et al. 2024; fla.layers.GatedDeltaNet): DeltaNet
    plus a scalar forget gate per value head, g = -exp(A_log) *
    softplus(W_a x + dt_bias) (Mamba-2 style), value heads num_v_heads >=
    num_heads, and a swish output gate into the RMSNorm."""

    family = "gated_delta_rule"

    def __init__(self, hidden_size, num_heads=4, expand_v=2.0, num_v_heads=None,
                 head_dim=None, use_short_conv=True, conv_size=4, norm_eps=1e-5):
        hd = head_dim or hidden_size // num_heads
        super().__init__(hidden_size, num_heads, hd * num_heads / hidden_size, expand_v,
                         num_v_heads, use_short_conv, conv_size, True, norm_eps)
        HV = self.num_v_heads
        self.a_proj = nn.Linear(hidden_size, HV, bias=False)
        A = torch.empty(HV).uniform_(1, 16)
        self.A_log = nn.Parameter(torch.log(A))
        dt = torch.exp(torch.rand(HV) * (torch.log(torch.tensor(0.1)) -
                                         torch.log(torch.tensor(0.001))) +
                       torch.log(torch.tensor(0.001))).clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))

    def _gate(self, x):
        return -self.A_log.float().exp() * F.softplus(self.a_proj(x).float() + self.dt_bias)


__all__ = ["RMSNorm", "ShortConvolution", "LinearAttention", "PerformerAttention",
           "GatedLinearAttention", "DeltaNet", "GatedDeltaNet"]
