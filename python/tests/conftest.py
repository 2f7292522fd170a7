import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

torch = pytest.importorskip("torch")


def rel_rms(a, b):
    """Relative RMS error of a against the reference b (fla's measure)."""
    a, b = a.detach().double(), b.detach().double()
    den = b.pow(2).mean().sqrt().item()
    err = (a - b).pow(2).mean().sqrt().item()
    return err / den if den > 0 else err


def assert_close(name, a, b, tol):
    assert a is not None and b is not None, name
    assert tuple(a.shape) == tuple(b.shape), (name, tuple(a.shape), tuple(b.shape))
    assert torch.isfinite(a).all(), "%s has non-finite entries" % name
    e = rel_rms(a, b)
    assert e <= tol, "%s: relative RMS error %.3g > %.3g" % (name, e, tol)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
