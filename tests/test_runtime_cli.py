"""`rt-decoder run` refuses bad input with one clear line and a non-zero exit status."""

from __future__ import annotations

import subprocess
import sys
import uuid

import numpy as np
import pytest

from rt_decoder.errors import StreamError
from rt_decoder.runtime import lsl as L
from rt_decoder.runtime.loop import Runtime
from rt_decoder.runtime.player import Player
from rt_decoder.runtime.probe import linear_model, poisson_recording

pytestmark = pytest.mark.lsl


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return linear_model(tmp_path_factory.mktemp("m") / "m32.onnx", n_channels=32, n_outputs=2, bin_s=0.02)


def _run_cli(*argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rt_decoder.cli", "run", *argv], capture_output=True, text=True,
                          timeout=timeout)


def _one_line(p: subprocess.CompletedProcess) -> str:
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


def test_unknown_stream(model_path):
    name = "nosuch-" + uuid.uuid4().hex[:8]
    line = _one_line(_run_cli(str(model_path), "--input", name, "--resolve-timeout", "0.5"))
    assert f"name={name}" in line and "no LSL stream found" in line and "visible" in line


def test_wrong_channel_count(model_path):
    name = "t" + uuid.uuid4().hex[:8]
    player = Player(poisson_recording(50, 24), name=name)  # 24 channels, the model expects 32
    line = _one_line(_run_cli(str(model_path), "--input", f"{name}-spikes", "--resolve-timeout", "5"))
    assert "has 24 channels" in line and "expects 32" in line
    player.close()


def test_wrong_model_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not onnx")
    line = _one_line(_run_cli(str(bad), "--input", "whatever", "--resolve-timeout", "0.2"))
    assert "bad.onnx" in line and "not a readable ONNX model" in line
    line = _one_line(_run_cli(str(tmp_path / "absent.onnx")))
    assert "no such model file" in line


def test_rate_and_format_are_checked_before_the_first_bin(model_path):
    name = "t" + uuid.uuid4().hex[:8]
    out = L.make_outlet(f"{name}-a", "SpikeCounts", [f"c{i}" for i in range(32)], 30.0, fmt="int32")
    with pytest.raises(StreamError, match="30 Hz does not divide the model's 20 ms bin"):
        Runtime(model_path, f"{name}-a", output=f"{name}-dec", stats=None, resolve_timeout=5).run(max_bins=1)
    ev = L.make_outlet(f"{name}-b", "SpikeEvents", ["channel"], 0.0, fmt="float32")
    with pytest.raises(StreamError, match="integer channel indices"):
        Runtime(model_path, f"{name}-b", output=f"{name}-dec", stats=None, resolve_timeout=5).run(max_bins=1)
    del out, ev


def test_config_file_and_flags(tmp_path, model_path):
    cfg = tmp_path / "rt.yaml"
    cfg.write_text("budget_ms: 7\nbogus: 1\n")
    line = _one_line(_run_cli(str(model_path), "--config", str(cfg)))
    assert "unknown option(s) bogus" in line
    from pathlib import Path

    from rt_decoder.commands.run import DEFAULTS, resolve_options

    class A:
        config = None
    a = A()
    for k in DEFAULTS:
        setattr(a, k, None)
    a.budget_ms = 2.5
    opts = resolve_options(a)
    assert opts["budget_ms"] == 2.5 and opts["emit"] == "asap" and np.isclose(opts["grace_ms"], 3.0)
    a.config = Path(__file__).resolve().parents[1] / "configs" / "runtime.yaml"  # the shipped file is valid
    assert resolve_options(a) == opts | {"budget_ms": 2.5}


def test_bench_arch_from_refuses_a_model_without_a_unet(model_path):
    p = subprocess.run([sys.executable, "-m", "rt_decoder.cli", "bench", "latency", "--arch-from", str(model_path),
                        "--bins", "10"], capture_output=True, text=True, timeout=60)
    line = _one_line(p)
    assert model_path.name in line and "retention_unet" in line
