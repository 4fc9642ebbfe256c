"""model.stack: the second state's step graph equals the torch network run as one sequence (over
real chestek bins), the state is carried from bin to bin (a graph that reset it would fail), and
the config refuses what the stacked network cannot do."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rt_decoder.errors import ConfigError  # noqa: E402
from rt_decoder.metrics import r2  # noqa: E402
from rt_decoder.recording import Recording  # noqa: E402
from rt_decoder.retention import quantize, retention_parallel_f32, shift_for_lag  # noqa: E402
from rt_decoder.step_model import StepModel  # noqa: E402
from training.config import DEFAULTS, _merge, validate  # noqa: E402
from training.data import prepare  # noqa: E402
from training.export import export_step_graph  # noqa: E402
from training.stacked import STACKS, StackedNet, Windows  # noqa: E402
from training.train import build_model, fit  # noqa: E402


def _cfg(**over) -> dict:
    return validate(_merge(DEFAULTS, over, "<test>"), "<test>")


def _stacked_cfg(stack: str, lag_bins: int = 0, **training) -> dict:
    return _cfg(lag_bins=lag_bins, retention={"decays": [0.0, 0.5, 0.875, 0.96875]},
                model={"widths": [4], "head_hidden": 32, "head_layers": 2, "stack": stack, "stack_size": 24},
                training={"window": 16, "streams": 8, "threads": 1, **training})


def _torch_block(model, prep, cfg, counts: np.ndarray) -> np.ndarray:
    """The network over a block as training runs it: zeta from the block's first bin (the graph's
    reset), the second state from zeros, the whole block as one sequence; physical units."""
    r = cfg["retention"]
    z = retention_parallel_f32(quantize(counts, levels=r["levels"], kind=r["quantizer"]).astype(np.float32), prep.decays)
    z = shift_for_lag(z, cfg["lag_bins"])
    win = Windows(torch.as_tensor(z), torch.zeros(len(z), prep.n_outputs), torch.as_tensor(prep.pixels), prep.canvas,
                  (0, len(z)), 1, len(z))
    with torch.no_grad():
        out, _ = model.net.sequence(win.rows(torch.arange(len(z))[:, None]))
    return out[:, 0].numpy() * prep.out_std + prep.out_mean


def _poisson_rec(T: int = 1200, D: int = 30, K: int = 2, seed: int = 0) -> Recording:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(0.9, size=(T, D))
    y = np.cumsum(rng.normal(size=(T, K)), axis=0)
    return Recording(counts=counts, bin_s=0.05, behavior=y, source="<poisson>").validate()


@pytest.mark.parametrize("lag_bins", [0, 1])
@pytest.mark.parametrize("stack", [s for s in STACKS if s != "none"])
def test_every_stack_exports_and_steps_like_torch(tmp_path, stack, lag_bins):
    """Untrained weights are enough to pin the graph to the network: bin by bin from a reset,
    the ONNX step graph gives the torch sequence's outputs, for every stack and lag."""
    rec = _poisson_rec()
    cfg = _stacked_cfg(stack, lag_bins)
    prep = prepare(rec, cfg)
    torch.manual_seed(1)
    model = build_model(prep, cfg).eval()
    assert isinstance(model.net, StackedNet)
    export_step_graph(model, prep, cfg, tmp_path / "m.onnx")
    sm = StepModel(tmp_path / "m.onnx")
    size = 24 * (2 if stack == "gru2" else 1)        # gru2 carries both layers' states
    assert [s.name for s in sm.card.states] == ["zeta", "stack_s"] and sm.card.states[1].shape == [1, size]
    assert sm.card.extra["stack"] == {"kind": stack, "size": size}
    got = sm.run(rec.counts)
    want = _torch_block(model, prep, cfg, rec.counts)
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=0)
    # catch-up (DESIGN §6) advances both states exactly as a full step does
    before = {k: v.copy() for k, v in sm.state.items()}
    sm.advance(rec.counts[0])
    advanced = {k: v.copy() for k, v in sm.state.items()}
    sm.state = before
    sm.step(rec.counts[0])
    for k in ("zeta", "stack_s"):
        np.testing.assert_array_equal(advanced[k], sm.state[k])
    if lag_bins == 1:          # the prediction for bin 0 has seen no counts at all
        sm.reset()
        a = sm.step(rec.counts[0])
        sm.reset()
        b = sm.step(rec.counts[0] + 5)
        np.testing.assert_array_equal(a, b)


def test_linear_skip_adds_a_linear_path_from_zeta_and_exports(tmp_path):
    """model.linear_skip: the output moves linearly with zeta beside the network (zero at the
    start, so training begins at the plain network), and the step graph carries it bin by bin."""
    rec = _poisson_rec()
    cfg = _stacked_cfg("gru")
    cfg["model"]["linear_skip"] = True
    prep = prepare(rec, cfg)
    torch.manual_seed(1)
    model = build_model(prep, cfg).eval()
    assert not model.net.skip.weight.any()
    plain = _torch_block(model, prep, cfg, rec.counts)
    with torch.no_grad():
        model.net.skip.weight.normal_(0, 0.05)
    want = _torch_block(model, prep, cfg, rec.counts)
    assert np.abs(want - plain).max() > 0.1 * np.abs(plain).max()
    export_step_graph(model, prep, cfg, tmp_path / "m.onnx")
    got = StepModel(tmp_path / "m.onnx").run(rec.counts)
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=0)


@pytest.fixture(scope="module")
def chestek_stacked(tmp_path_factory):
    """A GRU-stacked decoder trained six epochs on the first 6000 bins of chestek (test: 1200 bins)."""
    from conftest import data_file

    from rt_decoder.loaders import load_recording

    rec = load_recording(data_file("chestek_contdata95", "contdata95.mat"), None).slice(0, 6000)
    cfg = _stacked_cfg("gru", max_epochs=6)
    d = tmp_path_factory.mktemp("stacked")
    prep = prepare(rec, cfg)
    res = fit(prep, cfg, d / "checkpoint.pt", log=lambda s: None)
    export_step_graph(res.model, prep, cfg, d / "model.onnx")
    return rec, prep, cfg, res.model, d / "model.onnx"


@pytest.mark.realdata
def test_onnx_equals_torch_on_real_bins(chestek_stacked):
    rec, prep, cfg, model, path = chestek_stacked
    a, b = prep.split["test"]
    assert b - a >= 1000
    m = StepModel(path)
    got = m.run(rec.counts[a:b])
    want = _torch_block(model, prep, cfg, rec.counts[a:b])
    scale = np.nanstd(rec.behavior[a:b], axis=0)
    assert np.max(np.abs(got - want) / scale) < 1e-4
    assert np.mean(r2(rec.behavior[a:b], got)) > 0.3          # six epochs already decode


@pytest.mark.realdata
def test_the_second_state_is_carried_from_bin_to_bin(chestek_stacked):
    """Resetting stack_s before every bin (zeta still carried) must change the predictions, and
    the torch sequence — which carries the state — matches only the carried run (above): a graph
    that dropped stack_s, or returned it unchanged, fails here or there."""
    rec, prep, cfg, model, path = chestek_stacked
    a, b = prep.split["test"]
    m = StepModel(path)
    carried = m.run(rec.counts[a:b])
    assert np.abs(m.state["stack_s"]).max() > 0
    m.reset()
    reset = np.empty_like(carried)
    for k in range(b - a):
        m.state["stack_s"] = np.zeros_like(m.state["stack_s"])
        reset[k] = m.step(rec.counts[a + k])
    scale = np.nanstd(rec.behavior[a:b], axis=0)
    assert np.mean(np.abs(carried - reset) / scale) > 0.05
    r_carried, r_reset = np.mean(r2(rec.behavior[a:b], carried)), np.mean(r2(rec.behavior[a:b], reset))
    assert r_carried > r_reset + 0.05, (r_carried, r_reset)


@pytest.mark.parametrize("over, message", [
    ({"kind": "generative", "model": {"stack": "gru"}}, "model.stack is for decoders"),
    ({"model": {"stack": "gru", "head_layers": 1}}, "model.head_layers 2"),
    ({"model": {"stack": "lstm"}}, "model.stack must be one of"),
    ({"model": {"stack": "gru"}, "training": {"mode": "online"}}, "training.mode offline"),
    ({"model": {"linear_skip": True}}, "model.linear_skip belongs to the stacked decoder"),
    ({"model": {"linear_skip": 1}}, "model.linear_skip must be true or false"),
])
def test_config_refuses_what_the_stack_cannot_do(over, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(**over)


def test_multisession_refuses_a_stack():
    from training.multisession import build

    with pytest.raises(ConfigError, match="model.stack is not supported in multi-session"):
        build([], _stacked_cfg("gru"))


@pytest.mark.parametrize("training", [{"input_offset": 0.2}, {"input_gain": 0.2}, {"input_drop": 0.1}, {"keep": "last"}])
def test_multisession_refuses_what_its_loop_does_not_do(training):
    from training.multisession import build

    key = next(iter(training))
    with pytest.raises(ConfigError, match=f"training.{key} .* not supported in multi-session"):
        build([], _stacked_cfg("none", **training))


def test_gru_reference_trains_with_a_carried_state(tmp_path):
    """baselines.gru.carry: the reference trained on TBPTT streams (the regime model.stack uses,
    for a like-for-like comparison) exports a step graph that decodes simulated reaches."""
    from rt_decoder.recording import split_bounds
    from rt_decoder.simulate import simulate_session
    from training import gru
    from training.reference import hparams_for, prepare_reference, train_reference

    rec = simulate_session(minutes=3.0, channels=24, bin_s=0.05, seed=2)
    split = split_bounds(rec.n_bins)
    hp = hparams_for("gru", {"carry": True, "hidden": 32, "window": 16, "batch_size": 8})
    data = prepare_reference(rec, split, 0)
    wins = list(gru.carried_batches(gru.build(data, hp), data, hp, torch.Generator().manual_seed(0)))
    a, b = split["train"]
    assert len(wins) >= (b - a) // (8 * 16) - 1 and all(torch.isfinite(w) for w in wins)
    r = train_reference("gru", rec, split, 0, tmp_path / "gru.onnx", overrides=hp | {"max_epochs": 4}, progress=False)
    t0, t1 = split["test"]
    got = StepModel(r.path).run(rec.counts[t0:t1])
    assert np.mean(r2(rec.behavior[t0:t1], got)) > 0.3


@pytest.mark.lsl
def test_run_streams_a_stacked_model_over_lsl(tmp_path):
    """`run` carries both states over a real LSL stream: the decoded stream equals stepping the
    graph offline, and the session log re-runs exactly."""

    from rt_decoder.runtime.probe import decode_replay, poisson_recording
    from rt_decoder.runtime.session_log import rerun_log

    rec = poisson_recording(700, 16, bin_s=0.02, seed=21)
    cfg = _stacked_cfg("gru")
    prep = prepare(rec, cfg)
    torch.manual_seed(0)
    export_step_graph(build_model(prep, cfg).eval(), prep, cfg, tmp_path / "m.onnx")
    path = tmp_path / "m.onnx"
    live = rec.slice(600, 700)
    x, summary = decode_replay(path, live, log_path=tmp_path / "s.jsonl")
    assert summary["predictions"] == 100
    m = StepModel(path)
    want = m.run(live.counts)
    np.testing.assert_allclose(x, want, atol=1e-5)
    assert np.abs(m.state["stack_s"]).max() > 0
    assert rerun_log(path, tmp_path / "s.jsonl")["exact"]


def test_augment_offset_is_held_over_the_window_and_shared_by_decays() -> None:
    """training.input_offset shifts each channel of each stream by one value for the whole window and
    every decay (a baseline-rate change), and differs between channels and streams; 0 is identity."""
    from training.train import augment

    x = torch.zeros(16, 4, 3, 5, 6)                  # (L, B, S, H, W)
    torch.manual_seed(0)
    y = augment(x, 0.0, 0.1)
    d = y - x
    assert torch.equal(d, d[:1, :, :1].expand_as(d))            # same over time and decays
    assert d[0, :, 0].std() > 0.05                              # differs between streams and pixels
    assert not torch.equal(d[0, 0], d[0, 1])
    assert torch.equal(augment(x, 0.0, 0.0), x)
    flat = augment(torch.zeros(8, 3, 5, 6), 0.0, 0.1)           # (B, S, H, W): per sample
    assert torch.equal(flat, flat[:, :1].expand_as(flat)) and flat.std() > 0.05
    scale = torch.zeros(5, 6)
    scale[1, 2], scale[3, 4] = 1.0, 0.01                        # one channel per pixel; 0 = empty pixel
    d = augment(x, 0.0, 1.0, scale)[0, :, 0]                    # offsets in units of each channel's sd
    assert d[:, 1, 2].std() > 0.3 and 0 < d[:, 3, 4].abs().max() < 0.05
    assert d[:, 0, 0].abs().max() == 0
    noisy = augment(x, 0.1, 0.0)
    assert not torch.equal(noisy[0], noisy[1])                  # white noise changes every value


def test_huber_loss_is_squared_near_and_linear_far_and_skips_nan() -> None:
    """training.huber d: err^2 within d output sds, 2 d |err| - d^2 beyond (the two meet at d), NaN
    targets left out; 0 is the mean squared error; the stacked and the flat decoder share it."""
    from training.model import NetConfig
    from training.stacked import StackedNet

    net = StackedNet(NetConfig(in_channels=2, canvas=(4, 4), n_outputs=3, widths=[4], head_hidden=8), "gru", 8)
    out = torch.tensor([[0.5, 3.0, 1.0]])
    y = torch.tensor([[0.0, 0.0, float("nan")]])
    assert float(net.loss(out, y)) == pytest.approx((0.25 + 9.0) / 2)
    assert float(net.loss(out, y, 2.0)) == pytest.approx((0.25 + (2 * 2 * 3 - 4)) / 2)
    edge = torch.tensor([[2.0, -2.0, 0.0]])
    assert float(net.loss(edge, torch.zeros(1, 3), 2.0)) == pytest.approx(8.0 / 3)
    from training.model import Net

    flat = Net(NetConfig(in_channels=2, canvas=(4, 4), n_outputs=3, widths=[4], head_hidden=8))   # the flat decoder: same loss
    mask = torch.isfinite(y)
    assert float(flat.loss(out, y, mask, 2.0)) == pytest.approx(float(net.loss(out, y, 2.0)))
    assert float(flat.loss(out, y, mask)) == pytest.approx(float(net.loss(out, y)))


def test_augment_gain_and_drop_are_per_channel_and_held_over_the_window() -> None:
    """training.input_gain multiplies each channel of each stream by one positive factor for the
    whole window and every decay; training.input_drop silences whole channels at about its rate;
    zero pixels stay zero under both (a gain or a drop cannot invent activity)."""
    from training.train import augment

    torch.manual_seed(0)
    x = torch.rand(16, 8, 3, 10, 10) + 0.5           # (L, B, S, H, W), every value positive
    x[:, :, :, 0, 0] = 0.0                           # an empty pixel
    g = augment(x, 0.0, 0.0, gain=0.3) / x.clamp_min(1e-9)
    ratio = g[:, :, :, 1:, :]
    assert torch.allclose(ratio, ratio[:1, :, :1].expand_as(ratio), rtol=1e-5)   # same over time and decays
    assert (ratio > 0).all() and 0.2 < ratio.log().std() < 0.4
    assert not torch.equal(ratio[0, 0], ratio[0, 1])                     # differs between streams
    assert (augment(x, 0.0, 0.0, gain=0.3)[:, :, :, 0, 0] == 0).all()
    d = augment(x, 0.0, 0.0, drop=0.25)
    silent = (d == 0).all(dim=0).all(dim=1)                              # (B, H, W): silenced all window
    assert torch.equal((d == 0), silent[None, :, None].expand_as(d))     # a channel is all or nothing
    assert 0.15 < silent[:, 1:, :].float().mean() < 0.35
    kept = ~silent
    assert torch.equal(d.permute(0, 2, 1, 3, 4)[:, :, kept], x.permute(0, 2, 1, 3, 4)[:, :, kept])
    assert torch.equal(augment(x, 0.0, 0.0, gain=0.0, drop=0.0), x)


@pytest.mark.parametrize("widths", [[4], [4, 8], [4, 8, 16]])
def test_stem_without_bias_gives_silent_pixels_zero_features_and_exports(tmp_path, widths):
    """model.stem_bias false (the default's): a zero zeta image gives exactly zero UNet features, so
    empty and silent pixels add no constant FC inputs (with a bias they all carry relu(b), and
    Adam moving those weights together killed every FC unit on ziv CA1) — at every UNet depth (a
    biased level below the stem put the constant back; the 2-level UNet died so on ziv CA1);
    the graph still steps like the torch network."""
    rec = _poisson_rec()
    cfg = _cfg(retention={"decays": [0.0, 0.5, 0.875, 0.96875]},
               model={"widths": widths, "head_hidden": 32, "head_layers": 2, "stack": "gru", "stack_size": 24,
                      "stem_bias": False},
               training={"window": 16, "streams": 8, "threads": 1})
    prep = prepare(rec, cfg)
    torch.manual_seed(2)
    model = build_model(prep, cfg).eval()
    assert model.net.unet.stem.bias is None
    zero = torch.zeros(3, 4, *prep.canvas)
    assert torch.count_nonzero(model.net.unet(zero)) == 0
    with_bias = build_model(prep, _cfg(**{**{k: cfg[k] for k in ("retention", "training")},
                                          "model": {**cfg["model"], "stem_bias": True}})).eval()
    assert torch.count_nonzero(with_bias.net.unet(zero)) > 0          # the constant the default avoids
    export_step_graph(model, prep, cfg, tmp_path / "m.onnx")
    got = StepModel(tmp_path / "m.onnx").run(rec.counts[:300])
    want = _torch_block(model, prep, cfg, rec.counts[:300])
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=0)
    with pytest.raises(ConfigError, match="model.stem_bias must be true or false"):
        _cfg(model={"stem_bias": "no"})


@pytest.mark.parametrize("widths, stem_bias", [([4], False), ([4, 8], False), ([4, 8, 16], False), ([4], True)])
def test_fc1_reads_only_inputs_that_can_be_nonzero_and_equals_the_full_layer(widths, stem_bias):
    """FC1 drops the inputs that are zero whatever the data (empty pixels, and UNet features out of
    reach of every occupied pixel when no conv has a bias): same initial weights, same outputs as the
    full-width layer, fewer inputs; the support it keeps holds every nonzero input."""
    from training.model import NetConfig

    S, H, W, pix = 3, 16, 16, np.arange(40)            # 40 channels: the first 2.5 rows of 16x16
    cfg = NetConfig(in_channels=S, canvas=(H, W), n_outputs=2, widths=widths, head_hidden=32, head_layers=2,
                    dropout=0.0, stem_bias=stem_bias)
    torch.manual_seed(3)
    pruned = StackedNet(cfg, "gru", 16, pix).eval()
    torch.manual_seed(3)
    full = StackedNet(cfg, "gru", 16).eval()
    n_full = (widths[0] + S) * H * W
    assert full.fc1.in_features == n_full
    unet_kept = pruned.fc1.in_features - S * len(pix)
    assert unet_kept == widths[0] * H * W if stem_bias else 0 < unet_kept < widths[0] * H * W
    np.testing.assert_array_equal(pruned.fc1.weight.detach(), full.fc1.weight.detach()[:, pruned.fc1_keep])
    zeta = torch.zeros(50, S, H * W)
    zeta[:, :, pix] = torch.rand(50, S, len(pix)) * 3
    zeta = zeta.view(50, S, H, W)
    with torch.no_grad():
        for p in pruned.unet.parameters():           # any weights: the support is structural
            p.normal_()
        full.unet.load_state_dict(pruned.unet.state_dict())
        x = torch.cat([pruned.unet(zeta), zeta], dim=1).flatten(1)
        off = torch.ones(n_full, dtype=torch.bool)
        off[pruned.fc1_keep] = False
        assert not x[:, off].any() and x[:, ~off].any()
        s0 = torch.zeros(50, 16)
        want = full(zeta, s0)[0]
        np.testing.assert_allclose(pruned(zeta, s0)[0], want, atol=1e-5 * float(want.abs().max()), rtol=0)
