"""A corpus larger than memory (training/corpus.py): memory-mapped session caches train to the
same weights as in-memory sessions, are rebuilt when a file changes, keep the process's own
memory flat as the corpus grows; session shards train in one process too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rt_decoder.cli import main  # noqa: E402
from rt_decoder.recording import save_npz  # noqa: E402
from rt_decoder.simulate import simulate_session  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
name: corpus
retention: {decays: [0.0, 0.5, 0.875], quantizer: levels, levels: 4}
model: {widths: [8], head_hidden: 32, dropout: 0.1}
training: {batch_size: 64, lr: 0.003, max_epochs: 6, patience: 6, seed: 0, input_noise: 0.05, threads: 1}
multisession: {enabled: true, memmap: MEMMAP, shards: SHARDS}
"""


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corpus")
    for i, (D, drift) in enumerate([(24, 0.0), (20, 0.3), (28, 0.5)]):
        save_npz(simulate_session(minutes=2.0, channels=D, bin_s=0.05, seed=i, drift=drift), tmp / f"day{i}.npz")
    return tmp


def _train(tmp: Path, out: str, memmap: bool, shards: int = 0, files: str = "day*.npz", epochs: int = 6) -> dict:
    cfg = tmp / f"{out}.yaml"
    cfg.write_text(CONFIG.replace("MEMMAP", str(memmap).lower()).replace("SHARDS", str(shards))
                   .replace("max_epochs: 6", f"max_epochs: {epochs}"))
    code = main(["train", "--config", str(cfg), "--data", str(tmp / files), "--out", str(tmp / out), "--no-baselines"])
    assert code == 0
    return torch.load(tmp / out / "multisession.pt", map_location="cpu", weights_only=True)["state"]


def test_memmap_trains_the_same_weights_and_rebuilds_on_change(days, capsys):
    ram = _train(days, "ram", memmap=False)
    mm = _train(days, "mm", memmap=True)
    err = capsys.readouterr().err
    assert set(ram) == set(mm)
    for k in ram:
        np.testing.assert_allclose(mm[k].numpy(), ram[k].numpy(), rtol=1e-6, atol=1e-7, err_msg=k)
    caches = sorted(p.name for p in (days / "mm" / "cache").iterdir())
    assert [c.split("-")[0] for c in caches] == ["day0", "day1", "day2"] and "cached in" in err
    summary = json.loads((days / "mm" / "metrics.json").read_text())
    assert summary["memmap"] and all(np.mean(s["r2"]) > 0.2 for s in summary["sessions"].values()), summary["sessions"]
    # a second run maps the caches it finds; a changed file gets a new cache (its hash is in the name)
    _train(days, "mm", memmap=True, files="day[01].npz", epochs=1)
    assert "memory-mapped from" in capsys.readouterr().err
    save_npz(simulate_session(minutes=1.0, channels=24, bin_s=0.05, seed=9), days / "day0.npz")
    _train(days, "mm", memmap=True, files="day0.npz", epochs=1)
    again = sorted(p.name for p in (days / "mm" / "cache").iterdir())
    assert len(again) == 4 and len([c for c in again if c.startswith("day0-")]) == 2
    assert not any(".tmp" in c for c in again)


def test_shards_in_one_process_train_every_session(days, capsys):
    _train(days, "sharded", memmap=False, shards=3)
    summary = json.loads((days / "sharded" / "metrics.json").read_text())
    assert summary["shards"] == 3 and set(summary["sessions"]) == {"day0", "day1", "day2"}
    assert all(np.mean(s["r2"]) > 0.2 for s in summary["sessions"].values()), summary["sessions"]
    for name in summary["sessions"]:
        assert (days / "sharded" / "sessions" / name / "model.onnx").exists()
    # resumable: the shard schedule is a function of (seed, shard, epoch), so it continues from rank 0's epoch checkpoint
    cfg = days / "sharded.yaml"
    cfg.write_text(cfg.read_text().replace("max_epochs: 6", "max_epochs: 7"))
    code = main(["train", "--config", str(cfg), "--data", str(days / "day*.npz"), "--out", str(days / "sharded"),
                 "--no-baselines", "--resume"])
    assert code == 0 and "resumed from" in capsys.readouterr().err
    assert json.loads((days / "sharded" / "metrics.json").read_text())["epochs"] == 7
    cfg = days / "bad.yaml"
    cfg.write_text(CONFIG.replace("MEMMAP", "false").replace("SHARDS", "4"))
    code = main(["train", "--config", str(cfg), "--data", str(days / "day*.npz"), "--out", str(days / "bad"), "--no-baselines"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "bad.yaml" in err[-1] and "more than the 3 sessions" in err[-1], err[-1]


def _measure(folder: Path, *extra: str) -> dict:
    cmd = [sys.executable, str(ROOT / "tools" / "corpus_memory.py"), "measure", "--dir", str(folder), "--batch-size", "512",
           *extra]
    r = subprocess.run(cmd, cwd=ROOT, env=os.environ | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_memory_stays_flat_as_the_corpus_grows(tmp_path):
    """One memory-mapped session vs four of the same size: the process's own memory (RssAnon,
    peak while loading and training one epoch) grows by far less than the 3 added sessions."""
    sys.path.insert(0, str(ROOT / "tools"))
    from corpus_memory import build

    build(tmp_path, sessions=4, minutes=12, channels=128)
    one, four = _measure(tmp_path, "--sessions", "1"), _measure(tmp_path)
    added = four["cache_bytes"] - one["cache_bytes"]
    grew = four["rss_anon_growth"] - one["rss_anon_growth"]
    print(f"corpus {one['cache_bytes'] / 2**20:.0f} -> {four['cache_bytes'] / 2**20:.0f} MB; "
          f"peak RssAnon growth {one['rss_anon_growth'] / 2**20:.0f} -> {four['rss_anon_growth'] / 2**20:.0f} MB")
    assert added > 100 * 2**20 and four["sessions"] == 4 and four["epochs"] == 1
    assert grew < 0.3 * added, (one, four)
