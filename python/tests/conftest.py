import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

torch = pytest.importorskip("torch")

# The float64 references are Python loops of small tensor ops (a 500-step
# reference backward is ~10^4 ops of 128x128). torch's OpenMP pool meets at a
# barrier in every op, and when the cores are busy with something else (CI's
# two cores, or sanitizers beside the suite on the GPU machine) each barrier
# waits for descheduled threads: that reference backward took 2.1 s on one
# thread and 11-30 s on two of a loaded 2-core machine, and stopped the
# suite past its time limit on a 16-core one. One torch thread is as fast
# for these sizes and does not depend on the load. (linattn's own threads
# are separate: linattn.set_num_threads.)
torch.set_num_threads(1)


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
