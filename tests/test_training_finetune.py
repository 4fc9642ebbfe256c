"""Fine-tuning a decoder from a decoder checkpoint (training.init_from), as the ReFIT recalibration
of `rt-decoder experiment` does: every network tensor is taken, not only the UNet."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rt_decoder.cli import main  # noqa: E402
from rt_decoder.closedloop.experiment import fine_tune_config  # noqa: E402
from rt_decoder.recording import save_npz  # noqa: E402
from rt_decoder.simulate import simulate_session  # noqa: E402
from training.config import load_config  # noqa: E402
from training.data import prepare  # noqa: E402
from training.train import build_model, transfer_unet  # noqa: E402

SMALL = """
name: small
lag_bins: 0
retention: {decays: [0.0, 0.5, 0.875], quantizer: levels, levels: 4}
model: {widths: [8], head_hidden: 32, dropout: 0.1}
training: {batch_size: 128, lr: 0.003, max_epochs: 2, patience: 5, seed: 0}
baselines: {enabled: false}
"""


def test_decoder_checkpoint_initialises_the_whole_network_and_fine_tunes(tmp_path, capsys):
    rec = simulate_session(minutes=1.5, channels=24, bin_s=0.05, seed=5)
    data = save_npz(rec, tmp_path / "sim.npz")
    (tmp_path / "a.yaml").write_text(SMALL)
    assert main(["train", "--config", str(tmp_path / "a.yaml"), "--data", str(data), "--out", str(tmp_path / "a")]) == 0
    ck = torch.load(tmp_path / "a" / "checkpoint.pt", map_location="cpu", weights_only=True)["best_model"]

    cfg = load_config(tmp_path / "a.yaml")
    cfg["training"]["seed"] = 7                       # a different random start
    model = build_model(prepare(rec, cfg), cfg)
    net_keys = [k for k in model.state_dict() if k.startswith("net.")]
    assert any(k.startswith("net.head.") for k in net_keys)
    assert not all(torch.equal(model.state_dict()[k], ck[k]) for k in net_keys)
    assert transfer_unet(model, str(tmp_path / "a" / "checkpoint.pt")) == len(net_keys)
    for k in net_keys:                                # head included: a decoder -> decoder transfer
        assert torch.equal(model.state_dict()[k], ck[k]), k

    # the experiment's fine-tune config: the shipped/user config + training.init_from, trained by `train`
    b_cfg = fine_tune_config(tmp_path / "a.yaml", tmp_path / "a" / "checkpoint.pt", tmp_path / "b.yaml")
    capsys.readouterr()
    assert main(["train", "--config", str(b_cfg), "--data", str(data), "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert f"initialised {len(net_keys)} network tensors from {(tmp_path / 'a' / 'checkpoint.pt').resolve()}" in err
    b = torch.load(tmp_path / "b" / "checkpoint.pt", map_location="cpu", weights_only=True)["best_model"]
    # fine-tuned: moved from the start, but far closer to it than a fresh network is
    fresh = build_model(prepare(rec, cfg), cfg).state_dict()
    w = "net.head.net.0.weight" if "net.head.net.0.weight" in ck else next(k for k in net_keys if k.endswith("weight"))
    d_ft = float((b[w] - ck[w]).norm())
    d_fresh = float((fresh[w] - ck[w]).norm())
    assert 0 < d_ft < 0.5 * d_fresh, (d_ft, d_fresh)
    assert np.isfinite(d_ft)
