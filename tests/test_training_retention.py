"""The torch twin of the retention math equals the numpy original; the learned quantizer trains."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rt_decoder.retention import quantize as np_quantize  # noqa: E402
from rt_decoder.retention import retention_parallel_f32  # noqa: E402
from training.retention import (  # noqa: E402
    LearnedQuantizer,
    quantize,
    retention_parallel,
    retention_recurrent,
)

DECAYS = [0.5, 0.875, 31 / 32]


def _q(seed: int = 0, T: int = 400, D: int = 13) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np_quantize(rng.poisson(1.2, size=(T, D)), levels=4, kind="levels").astype(np.float32)


def test_quantize_matches_numpy():
    x = np.random.default_rng(1).poisson(2.0, size=(50, 7))
    for kind, levels in (("binary", 2), ("levels", 4), ("levels", 8)):
        want = np_quantize(x, levels, kind)
        got = quantize(torch.as_tensor(x), levels, kind).numpy()
        np.testing.assert_allclose(got, want, atol=1e-7)


@pytest.mark.parametrize("form", [retention_recurrent, retention_parallel])
def test_torch_retention_equals_numpy(form):
    q = _q()
    want = retention_parallel_f32(q, DECAYS)                      # (T, S, D)
    got = form(torch.as_tensor(q)[:, None], DECAYS)[:, 0].numpy()  # (T, B=1, S, D) -> (T, S, D)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_parallel_windows_carry_state():
    """Windows chained through zeta0 give the same zeta as one pass (online training relies on it)."""
    q = torch.as_tensor(_q(2))[:, None]
    whole = retention_parallel(q, DECAYS)
    first = retention_parallel(q[:150], DECAYS)
    second = retention_parallel(q[150:], DECAYS, first[-1])
    np.testing.assert_allclose(torch.cat([first, second]).numpy(), whole.numpy(), atol=1e-6, rtol=0)


def test_learned_quantizer_shape_range_and_gradient():
    lq = LearnedQuantizer(n_channels=5, levels=4)
    x = torch.tensor(np.random.default_rng(3).poisson(1.5, size=(20, 3, 5)), dtype=torch.float32)
    q = lq(x)
    assert q.shape == x.shape
    qd = q.detach()
    assert float(qd.min()) >= 0 and float(qd.max()) <= 1
    # starts as a soft version of the `levels` staircase
    assert float((qd - quantize(x, 4, "levels")).abs().max()) < 0.2
    z = retention_parallel(q, DECAYS)
    z.sum().backward()
    assert lq.w.grad is not None and lq.b.grad is not None
    assert float(lq.w.grad.abs().sum()) > 0 and float(lq.b.grad.abs().sum()) > 0
