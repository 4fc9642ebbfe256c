"""Session log: crash safe (a torn last line is ignored) and re-runs to the same predictions,
resets included."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rt_decoder.errors import DataError
from rt_decoder.runtime.probe import linear_model
from rt_decoder.runtime.session_log import SessionLog, file_sha256, read_log, rerun_log
from rt_decoder.step_model import StepModel


def test_rerun_with_reset_and_a_torn_tail(tmp_path):
    path = linear_model(tmp_path / "m.onnx", n_channels=8, n_outputs=2)
    m = StepModel(path)
    x = np.random.default_rng(0).poisson(0.8, size=(40, 8)).astype(np.float32)
    log = SessionLog(tmp_path / "s.jsonl", {"model": str(path), "model_sha256": file_sha256(path),
                                             "channels": m.card.channel_names, "outputs": m.card.outputs},
                     flush_every=7)
    for i in range(40):
        if i == 25:
            m.reset()
            log.event("reset", float(i), before_bin=i)
        pred = m.step(x[i]) if i % 4 else None  # every 4th bin "skipped": no prediction logged
        if pred is None:
            m.step(x[i])
        log.bin(i, float(i), x[i], pred, 1.0, 0, [] if pred is not None else ["skipped"], timing=(0.5, 0.9))
    log._f.flush()
    with open(tmp_path / "s.jsonl", "a") as f:
        f.write('{"i": 40, "t_end": 40.0, "coun')  # killed mid-write
    r = rerun_log(path, tmp_path / "s.jsonl")
    assert r["exact"] and r["model_matches"] and r["bins"] == 40 and r["predictions"] == 30
    assert r["skipped"] == 10 and r["resets"] == 1
    # without the reset the re-run would not match: the test can fail
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    (tmp_path / "noreset.jsonl").write_text("\n".join(ln for ln in lines if '"reset"' not in ln) + "\n")
    assert not rerun_log(path, tmp_path / "noreset.jsonl")["exact"]
    d = read_log(tmp_path / "s.jsonl")
    assert d["counts"].shape == (40, 8) and json.loads(lines[1])["ready_ms"] == 0.9


def test_not_a_log(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"hello": 1}\n')
    with pytest.raises(DataError, match="not an rt-decoder session log"):
        read_log(tmp_path / "x.jsonl")
    with pytest.raises(DataError, match="no such session log"):
        read_log(tmp_path / "absent.jsonl")
