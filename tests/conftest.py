"""Shared fixtures: where the real data lives, and a skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RT_DECODER_DATA", ROOT.parent / "shared" / "data"))


def data_file(*parts: str) -> Path:
    """Path to a file in ../shared/data, or skip the test when it is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not present: {p}")
    return p


def glm_sample(path: Path, T: int, D: int, self_weight: float, drive: float, bias: float, likelihood: str,
               seed: int = 0):
    """(T, D) counts from a known coupled GLM, sampled by its own step graph (saved at `path`):
    each neuron refractory (self_weight on its last bins), neuron 2k driving neuron 2k+1 (drive)."""
    import numpy as np

    from rt_decoder.generation import generate
    from rt_decoder.glm import GLMParams, glm_card, raised_cosine_basis
    from rt_decoder.recording import Recording
    from rt_decoder.step_graph import save
    from rt_decoder.step_model import StepModel

    basis = raised_cosine_basis(3, 8)
    W = np.zeros((3, D, D))
    W[0, np.arange(D), np.arange(D)] = self_weight
    W[0, np.arange(0, D, 2), np.arange(1, D, 2)] = drive
    rec = Recording(counts=np.zeros((5, D), int), bin_s=0.01, channel_names=[f"n{i}" for i in range(D)])
    p = GLMParams(bias=np.full(D, bias), weights=W.reshape(3 * D, D), basis=basis, likelihood=likelihood)
    save(p.to_onnx(glm_card(rec, p)), path)
    x, _ = generate(StepModel(path), T, seed=seed)
    return x


def train_on_counts(tmp_path: Path, x, config_text: str) -> int:
    """`rt-decoder train` on counts x (10 ms bins, channels n0, n1, ...) saved as tmp_path/sim.npz with
    config_text as tmp_path/gen.yaml, into tmp_path/run; returns the exit code."""
    from rt_decoder.cli import main
    from rt_decoder.recording import Recording, save_npz

    rec = Recording(counts=x, bin_s=0.01, channel_names=[f"n{i}" for i in range(x.shape[1])], source="sim").validate()
    save_npz(rec, tmp_path / "sim.npz")
    (tmp_path / "gen.yaml").write_text(config_text)
    return main(["train", "--config", str(tmp_path / "gen.yaml"), "--data", str(tmp_path / "sim.npz"),
                 "--out", str(tmp_path / "run")])


def network_logits(model, prep):
    """The generative network's per-channel logit for every bin of prep's recording, in torch (the
    step graph's twin): zeta image -> net -> the occupied pixels, as numpy (T, D)."""
    import torch

    from training.train import to_image

    with torch.no_grad():
        img = to_image(torch.as_tensor(prep.feats), torch.as_tensor(prep.pixels), prep.canvas)
        return model.net(img).flatten(1).numpy()[:, prep.pixels]


@pytest.fixture(autouse=True)
def _normal_priority_after_each_test():
    """The benches' `raise_priority` makes the calling thread SCHED_FIFO for good (Runtime.run puts
    it back itself); in-process tests would leave pytest's main thread there, and every later
    child process (and test) would inherit a real-time policy that starves its parent on 2 cores."""
    yield
    from rt_decoder.runtime.priority import normal_priority

    normal_priority()
