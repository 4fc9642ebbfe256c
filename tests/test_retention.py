"""Retention core: recurrent == parallel, lossless history, layouts, and the ONNX front-end."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rt_decoder.layout import (
    channel_of_pixel,
    default_canvas,
    explicit_layout,
    from_canvas,
    mean_neighbour_distance,
    raster_layout,
    similarity_layout,
    to_canvas,
)
from rt_decoder.model_card import ModelCard, StateSpec
from rt_decoder.retention import (
    auto_levels,
    clipped_fraction,
    decode_history,
    quantize,
    retention_parallel,
    retention_parallel_f32,
    retention_step,
)
from rt_decoder.step_graph import build_retention_model

DECAYS = [0.5, 0.875, 31 / 32]


def test_recurrent_equals_parallel_float64():
    rng = np.random.default_rng(0)
    q = quantize(rng.poisson(0.8, size=(500, 37)))
    par = retention_parallel(q, DECAYS)
    z = np.zeros((3, 37))
    for k in range(500):
        z = retention_step(z, q[k], DECAYS)
        np.testing.assert_allclose(z, par[k], atol=1e-12, rtol=0)


def test_recurrent_equals_parallel_float32():
    rng = np.random.default_rng(1)
    q = quantize(rng.poisson(2.0, size=(2000, 20)), levels=4, kind="levels").astype(np.float32)
    par64 = retention_parallel(q, DECAYS)
    par32 = retention_parallel_f32(q, DECAYS)
    np.testing.assert_allclose(par32, par64, atol=1e-6, rtol=0)


def _binary_zeta(x: np.ndarray, dtype) -> np.ndarray:
    z = np.zeros(x.shape[1], dtype=dtype)
    g = dtype(0.5)
    for k in range(x.shape[0]):
        z = g * z + (dtype(1) - g) * x[k].astype(dtype)
    return z


@pytest.mark.parametrize("dtype,n_bins", [(np.float64, 52), (np.float32, 24)])
def test_lossless_binary_history(dtype, n_bins):
    """The whole history since zeta_0 = 0, up to the mantissa's length, comes back bit for bit."""
    rng = np.random.default_rng(2)
    x = rng.integers(0, 2, size=(n_bins, 500))
    x[0] = 1  # the oldest bin set: the hardest case, every bit of the mantissa in use
    digits = decode_history(_binary_zeta(x, dtype), levels=2, n_bins=n_bins)
    np.testing.assert_array_equal(digits, x[::-1])


def test_lossless_history_fails_past_mantissa():
    """The bound is real: float32 cannot hold 32 binary bins."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2, size=(32, 500))
    x[0] = 1
    digits = decode_history(_binary_zeta(x, np.float32), levels=2, n_bins=32)
    assert not np.array_equal(digits, x[::-1])


@pytest.mark.parametrize("M", [3, 4, 5])
def test_base_m_digits(M):
    rng = np.random.default_rng(M)
    n = int(40 / np.log2(M))
    x = rng.integers(0, 9, size=(n, 200))
    q = quantize(x, levels=M, kind="levels")
    z = np.zeros(200)
    for k in range(n):
        z = retention_step(z[None], q[k], [1.0 / M])[0]
    digits = decode_history(z, levels=M, n_bins=n)
    np.testing.assert_array_equal(digits, np.minimum(x, M - 1)[::-1])


def test_default_canvas():
    assert default_canvas(95) == (16, 16)
    assert default_canvas(256) == (16, 16)
    assert default_canvas(257) == (24, 24)
    assert default_canvas(452) == (24, 24)
    assert default_canvas(4096) == (64, 64)


def test_canvas_round_trip_and_explicit_map():
    pix = raster_layout(10, (16, 16))
    v = np.arange(10.0) + 1
    img = to_canvas(v, pix, (16, 16))
    assert img.shape == (16, 16) and img.sum() == v.sum()
    np.testing.assert_array_equal(from_canvas(img, pix), v)
    inv = channel_of_pixel(pix, (16, 16))
    assert (inv >= 0).sum() == 10
    rc = np.array([[0, 0], [3, 5], [15, 15]])
    np.testing.assert_array_equal(explicit_layout(rc, (16, 16)), [0, 53, 255])
    with pytest.raises(ValueError):
        explicit_layout(np.array([[0, 0], [0, 0]]), (16, 16))


def test_similarity_layout_keeps_correlated_pairs_close():
    rng = np.random.default_rng(4)
    T, G, per = 4000, 8, 8
    latent = rng.poisson(1.0, size=(T, G)).astype(float)
    group = rng.permutation(np.repeat(np.arange(G), per))
    counts = rng.poisson(0.3 + latent[:, group])
    D = G * per
    canvas = default_canvas(D)
    pairs = np.array([(a, b) for a in range(D) for b in range(a + 1, D) if group[a] == group[b]])
    sim = mean_neighbour_distance(similarity_layout(counts, canvas), canvas, pairs)
    rand = np.mean([mean_neighbour_distance(rng.permutation(D), canvas, pairs) for _ in range(20)])
    assert sim < 0.6 * rand, (sim, rand)


def test_onnx_frontend_zeta_equals_numpy():
    rng = np.random.default_rng(5)
    D = 40
    canvas = default_canvas(D)
    pix = similarity_layout(rng.poisson(1, size=(300, D)), canvas)
    S = len(DECAYS)
    card = ModelCard(kind="decoder", model_type="retention_linear", bin_s=0.02,
                     channel_names=[f"c{i}" for i in range(D)], outputs=["a"], units=["u"],
                     states=[StateSpec("zeta", [1, S, *canvas])], decays=DECAYS, levels=4,
                     quantizer="levels", canvas=list(canvas), layout={"kind": "similarity", "pixels": pix.tolist()})
    model = build_retention_model(card, linear=(np.zeros((S * canvas[0] * canvas[1], 1)), np.zeros(1)))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = rng.poisson(1.5, size=(400, D)).astype(np.float32)
    ref = retention_parallel_f32(to_canvas(quantize(x, 4, "levels"), pix, canvas), DECAYS)
    z = np.zeros((1, S, *canvas), np.float32)
    for k in range(400):
        _, z = sess.run(None, {"counts": x[k : k + 1], "zeta": z})
        np.testing.assert_allclose(z[0], ref[k], atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    counts=hnp.arrays(np.int64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
                      elements=st.integers(0, 20)),
    decays=st.lists(st.floats(0.0, 0.999), min_size=1, max_size=4),
    levels=st.integers(2, 8),
)
def test_recurrent_equals_parallel_property(counts, decays, levels):
    """Any counts, any decays in [0, 1), any number of levels: the two forms agree."""
    q = quantize(counts, levels=levels, kind="levels")
    assert q.min() >= 0 and q.max() <= 1
    par = retention_parallel(q, decays)
    z = np.zeros((len(decays), counts.shape[1]))
    for k in range(counts.shape[0]):
        z = retention_step(z, q[k], decays)
    np.testing.assert_allclose(z, par[-1], atol=1e-12, rtol=0)


def test_auto_levels_keep_four_unless_clipping_loses_spikes():
    """Hand cases: the fraction of spikes above 3 counts decides; sparse data keep 4 levels."""
    sparse = np.array([[0, 1], [2, 3], [1, 0]])
    assert clipped_fraction(sparse, 4) == 0.0 and auto_levels(sparse) == 4
    busy = np.array([[5, 0], [1, 1], [0, 3]])          # 10 spikes, 2 above 3 -> 20% clipped
    assert clipped_fraction(busy, 4) == pytest.approx(0.2) and auto_levels(busy) == 8
    at_limit = np.ones((1, 1000))
    at_limit[0, :5] = 5                                 # 1020 spikes, 10 above 3: 0.98% -> still 4 levels
    assert clipped_fraction(at_limit, 4) == pytest.approx(10 / 1020) and auto_levels(at_limit) == 4
    at_limit[0, 5] = 5                                  # 1024 spikes, 12 above 3: 1.2% -> 8 levels
    assert auto_levels(at_limit) == 8
    one_in_a_hundred = np.concatenate([np.ones(99), [2.0]])     # 101 spikes, none above 3
    assert auto_levels(one_in_a_hundred[None]) == 4
    assert clipped_fraction(np.zeros((3, 2)), 4) == 0.0 and auto_levels(np.zeros((3, 2))) == 4
