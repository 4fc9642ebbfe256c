"""DDP under torchrun (gloo on CPU): two processes take the same steps as one process with the
same global batch; rank 0 alone writes; training resumes from rank 0's epoch checkpoint (the
learning-rate schedule follows the config given at resume, so a resumed run is not compared bit
for bit with an uninterrupted one)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow

from rt_decoder.recording import save_npz  # noqa: E402
from rt_decoder.simulate import simulate_session  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
name: ddp
retention: {decays: [0.0, 0.5, 0.875], quantizer: levels, levels: 4}
model: {widths: [8], head_hidden: 32, dropout: 0.0}
training: {batch_size: 64, lr: 0.003, max_epochs: EPOCHS, patience: 10, seed: 0, threads: 1}
multisession: {enabled: true, MULTI}
"""


def _train(tmp: Path, out: str, epochs: int, nproc: int, *extra: str, files: tuple[str, ...] = ("a.npz", "b.npz"),
           multi: str = "shards: 0") -> subprocess.CompletedProcess:
    cfg = tmp / f"{out}{epochs}.yaml"
    cfg.write_text(CONFIG.replace("EPOCHS", str(epochs)).replace("MULTI", multi))
    args = ["--config", str(cfg), "--data", *(str(tmp / f) for f in files), "--out", str(tmp / out),
            "--no-baselines", *extra]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "training.train", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port", str(_free_port()),
               "-m", "training.train", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def _why(proc: subprocess.CompletedProcess) -> str:
    """A failed run's telling lines (every rank's errors, wherever they are in stderr) and its tail:
    torchrun's summary alone hides why a rank aborted."""
    lines = proc.stderr.splitlines()
    telling = [ln for ln in lines if re.search(r"error|exception|terminate|abort|what\(\)|killed", ln, re.I)]
    return "\n".join(telling[:40]) + "\n--- tail ---\n" + proc.stderr[-2000:]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _state(path: Path) -> dict:
    return torch.load(path / "multisession.pt", map_location="cpu", weights_only=True)["state"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    save_npz(simulate_session(minutes=1.0, channels=24, bin_s=0.05, seed=1), tmp / "a.npz")
    save_npz(simulate_session(minutes=1.0, channels=20, bin_s=0.05, seed=2, drift=0.3), tmp / "b.npz")
    save_npz(simulate_session(minutes=1.0, channels=28, bin_s=0.05, seed=3, drift=0.5), tmp / "c.npz")
    return tmp


def test_two_processes_equal_one(data):
    one = _train(data, "one", 2, 1)
    assert one.returncode == 0, _why(one)
    two = _train(data, "two", 2, 2)
    assert two.returncode == 0, _why(two)
    a, b = _state(data / "one"), _state(data / "two")
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=2e-5, rtol=1e-4, err_msg=k)
    # rank 0 alone wrote: one checkpoint, one export per session, no stray temporary files
    files = sorted(p.relative_to(data / "two").as_posix() for p in (data / "two").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(data / "one").as_posix() for p in (data / "one").rglob("*") if p.is_file())
    assert not any(f.endswith(".tmp") for f in files)
    assert "world_size" in (data / "two" / "metrics.json").read_text()


def test_resume_continues_from_rank0_checkpoint(data):
    import json

    first = _train(data, "resumed", 1, 2)
    assert first.returncode == 0, _why(first)
    current = lambda: torch.load(data / "resumed" / "training_state.pt", weights_only=True)["state"]  # noqa: E731
    after_one = current()
    again = _train(data, "resumed", 2, 2, "--resume")
    assert again.returncode == 0 and "resumed from" in again.stderr and "at epoch 1" in again.stderr, again.stderr[-2000:]
    assert json.loads((data / "resumed" / "metrics.json").read_text())["epochs"] == 2
    moved = current()                                  # the weights trained on from epoch 1, not restarted
    assert any(not torch.equal(after_one[k], moved[k]) for k in moved)


def test_sharded_sessions_two_processes_equal_one(data):
    """multisession.shards 2: rank r opens only its sessions (a, c on rank 0; b on rank 1), here
    from memory-mapped caches; one process with shards 2 (every session in memory) takes the
    same steps; every session is exported and scored by the rank holding it."""
    import json

    files = ("a.npz", "b.npz", "c.npz")
    one = _train(data, "shard1", 2, 1, files=files, multi="shards: 2")
    assert one.returncode == 0, _why(one)
    two = _train(data, "shard2", 2, 2, files=files, multi="shards: 2, memmap: true")
    assert two.returncode == 0, _why(two)
    a, b = _state(data / "shard1"), _state(data / "shard2")
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=2e-5, rtol=1e-4, err_msg=k)
    m1 = json.loads((data / "shard1" / "metrics.json").read_text())
    m2 = json.loads((data / "shard2" / "metrics.json").read_text())
    names = lambda paths: sorted({Path(p).name for p in paths})  # noqa: E731
    assert [names(r) for r in m1["loaded_by_rank"]] == [["a.npz", "b.npz", "c.npz"]]
    assert [names(r) for r in m2["loaded_by_rank"]] == [["a.npz", "c.npz"], ["b.npz"]]
    assert m2["world_size"] == 2 and set(m2["sessions"]) == {"a", "b", "c"}
    for name in "abc":
        assert (data / "shard2" / "sessions" / name / "model.onnx").exists()
        np.testing.assert_allclose(m1["sessions"][name]["r2"], m2["sessions"][name]["r2"], atol=1e-3)
    files2 = [p.name for p in (data / "shard2").rglob("*") if p.is_file()]
    assert files2.count("multisession.pt") == 1 and files2.count("training_state.pt") == 1
    assert not any(".tmp" in f for f in files2)
