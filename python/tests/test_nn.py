"""Layers: step-by-step decoding equals forward, varlen equals separate
sequences, and a two-layer toy model trains (loss falls)."""

import pytest
import torch

import linattn.nn as lnn
from conftest import assert_close

LAYERS = [
    ("LinearAttention", lambda: lnn.LinearAttention(32, 2)),
    ("PerformerAttention", lambda: lnn.PerformerAttention(32, 2, num_features=24)),
    ("GatedLinearAttention", lambda: lnn.GatedLinearAttention(32, 2)),
    ("DeltaNet", lambda: lnn.DeltaNet(32, 2)),
    ("GatedDeltaNet", lambda: lnn.GatedDeltaNet(32, 1, num_v_heads=2, head_dim=16)),
]


@pytest.mark.parametrize("name,make", LAYERS, ids=[n for n, _ in LAYERS])
def test_step_equals_forward_and_varlen(name, make):
    layer = make()
    x = torch.randn(2, 13, 32)
    with torch.no_grad():
        y = layer(x)
        state, ys = None, []
        for t in range(13):
            yt, state = layer.step(x[:, t], state)
            ys.append(yt)
        tol = 1e-4 if name == "PerformerAttention" else 1e-5
        assert_close("step", torch.stack(ys, 1), y, tol)
        packed = layer(x.reshape(1, 26, 32), cu_seqlens=torch.tensor([0, 13, 26]))
        assert_close("varlen", packed.reshape(2, 13, 32), y, 1e-6)


def test_two_layer_model_trains():
    torch.manual_seed(0)
    V, D, T = 16, 32, 24

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(V, D)
            self.l1 = lnn.GatedDeltaNet(D, 2, head_dim=16)
            self.l2 = lnn.GatedLinearAttention(D, 2)
            self.out = torch.nn.Linear(D, V)

        def forward(self, ids):
            h = self.emb(ids)
            h = h + self.l1(h)
            h = h + self.l2(h)
            return self.out(h)

    model = Toy()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    # task: predict the token seen 3 steps earlier (needs memory across tokens)
    ids = torch.randint(0, V, (8, T))
    losses = []
    for _ in range(40):
        logits = model(ids)[:, 3:]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), ids[:, :-3].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.parameters() if p.requires_grad)
    assert losses[-1] < 0.5 * losses[0], losses
