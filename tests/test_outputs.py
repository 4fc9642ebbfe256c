"""Outputs: unwritable places are refused with one line before long work, and no command ever
leaves a partial file (rt_decoder.atomic), including when the disk fills mid-write.

A path under a regular file stands for an unwritable folder (tests may run as root, where
chmod does not stop writes); RLIMIT_FSIZE in a child process stands for a full disk (Python
ignores SIGXFSZ, so the write fails with EFBIG like ENOSPC would).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rt_decoder.atomic import atomic_path, check_output, write_json
from rt_decoder.baselines import fit_baselines
from rt_decoder.cli import main
from rt_decoder.errors import OutputError
from rt_decoder.recording import save_npz
from rt_decoder.simulate import simulate_session
from rt_decoder.step_graph import save

EXE = Path(sys.executable).parent / "rt-decoder"


def one_line(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, f"expected one line, got {err!r}"
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """Temporary files a failed write could leave behind."""
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name or p.name.startswith(".rt-decoder"))


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    d = tmp_path_factory.mktemp("outputs")
    rec = simulate_session(minutes=1.5, channels=20, bin_s=0.05, seed=2)
    save_npz(rec, d / "sim.npz")
    save(fit_baselines(rec)["wiener"], d / "wiener.onnx")
    return d, rec


def constant_generative(path: Path) -> Path:
    """A tiny constant-rate Bernoulli step graph (4 neurons): enough for `generate`."""
    from rt_decoder.layout import default_canvas, raster_layout
    from rt_decoder.model_card import ModelCard, StateSpec
    from rt_decoder.step_graph import build_retention_model

    D, canvas = 4, default_canvas(4)
    HW = canvas[0] * canvas[1]
    pix = raster_layout(D, canvas)
    card = ModelCard(kind="generative", model_type="retention_linear", bin_s=0.01,
                     channel_names=[f"n{i}" for i in range(D)], outputs=[f"n{i}" for i in range(D)], units=["p"] * D,
                     states=[StateSpec("zeta", [1, 1, *canvas])], decays=[0.5], canvas=list(canvas),
                     layout={"kind": "raster", "pixels": pix.tolist()}, likelihood="bernoulli")
    b = np.full(HW, -2.0)
    save(build_retention_model(card, linear=(np.zeros((HW, HW)), b)), path)
    return path


@pytest.fixture
def blocker(tmp_path) -> Path:
    """A regular file used as a folder: nothing can be created under it, even by root."""
    f = tmp_path / "blocker"
    f.write_text("I am a file, not a folder\n")
    return f


def test_atomic_path_keeps_the_old_file_and_no_temp_on_failure(tmp_path):
    dst = tmp_path / "m.json"
    write_json(dst, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(dst) as tmp:
            tmp.write_text('{"v": 2, "trunc')
            raise RuntimeError("writer died")
    assert json.loads(dst.read_text()) == {"v": 1}
    assert leftovers(tmp_path) == []
    write_json(dst, {"v": 3})
    assert json.loads(dst.read_text()) == {"v": 3} and leftovers(tmp_path) == []
    umask = os.umask(0o022)
    os.umask(umask)
    assert dst.stat().st_mode & 0o777 == 0o666 & ~umask      # not mkstemp's private 0600


def test_check_output_refuses_a_folder_under_a_file(blocker):
    with pytest.raises(OutputError) as e:
        check_output(blocker / "sub" / "x.json", "--json file")
    assert "x.json" in str(e.value) and "is a file, not a folder" in str(e.value)


def test_evaluate_json_unwritable_is_one_line_before_scoring(session, blocker, capsys):
    d, _ = session
    code = main(["evaluate", str(d / "wiener.onnx"), "--data", str(d / "sim.npz"), "--quiet",
                 "--json", str(blocker / "r.json")])
    cap = capsys.readouterr()
    one_line(code, cap.err, "r.json", "--json file")
    assert "R2" not in cap.out          # refused before any scoring


def test_evaluate_save_baselines_unwritable_is_one_line(session, blocker, capsys):
    d, _ = session
    code = main(["evaluate", "--baselines", "--data", str(d / "sim.npz"), "--quiet",
                 "--save-baselines", str(blocker / "b")])
    one_line(code, capsys.readouterr().err, "--save-baselines folder", "is a file, not a folder")


@pytest.mark.parametrize("flag", ["--out", "--report", "--json"])
def test_generate_unwritable_output_is_one_line_and_writes_nothing(tmp_path, blocker, capsys, flag):
    model = constant_generative(tmp_path / "gen.onnx")
    outs = {"--out": tmp_path / "g.npz", "--report": tmp_path / "g.png", "--json": tmp_path / "g.json"}
    outs[flag] = blocker / Path(outs[flag]).name
    argv = ["generate", str(model), "--steps", "50", "--quiet"]
    for k, v in outs.items():
        argv += [k, str(v)]
    code = main(argv)
    cap = capsys.readouterr()
    one_line(code, cap.err, flag)
    assert "generated" not in cap.out
    assert not (tmp_path / "g.npz").exists() and leftovers(tmp_path) == []


def test_simulate_and_convert_refuse_unwritable_output(session, blocker, capsys):
    d, _ = session
    one_line(main(["simulate", "--minutes", "0.5", "--out", str(blocker / "s.npz")]), capsys.readouterr().err, "s.npz")
    one_line(main(["convert", str(d / "sim.npz"), str(blocker / "c.npz")]), capsys.readouterr().err, "c.npz")


def test_run_json_unwritable_is_refused_before_looking_for_streams(session, blocker, capsys):
    d, _ = session
    t0 = time.monotonic()
    code = main(["run", str(d / "wiener.onnx"), "--input", "no-such-stream-rel-files", "--resolve-timeout", "5",
                 "--json", str(blocker / "run.json"), "--quiet"])
    one_line(code, capsys.readouterr().err, "run.json", "--json file")
    assert time.monotonic() - t0 < 4.0     # did not wait for the input first


def _limited(max_bytes: int):
    def pre() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return pre


@pytest.mark.skipif(not EXE.exists(), reason="rt-decoder console script not installed next to this Python")
def test_full_disk_during_simulate_leaves_nothing(tmp_path):
    """The write fails part-way (file size limit): one line, no partial .npz, no temp file."""
    out = tmp_path / "big.npz"
    r = subprocess.run([str(EXE), "simulate", "--minutes", "3", "--channels", "96", "--out", str(out)],
                       capture_output=True, text=True, timeout=120, preexec_fn=_limited(20_000))
    one_line(r.returncode, r.stderr, "big.npz", "cannot write")
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.skipif(not EXE.exists(), reason="rt-decoder console script not installed next to this Python")
def test_full_disk_during_evaluate_json_keeps_the_old_file(session, tmp_path):
    d, _ = session
    out = tmp_path / "r.json"
    out.write_text('{"old": true}\n')
    r = subprocess.run([str(EXE), "evaluate", str(d / "wiener.onnx"), "--data", str(d / "sim.npz"), "--quiet",
                        "--json", str(out)], capture_output=True, text=True, timeout=120, preexec_fn=_limited(200))
    one_line(r.returncode, r.stderr, "r.json", "cannot write")
    assert json.loads(out.read_text()) == {"old": True} and leftovers(tmp_path) == []


def test_train_out_unwritable_is_one_line_before_loading(session, blocker, capsys):
    pytest.importorskip("torch")
    d, _ = session
    code = main(["train", "--config", "default", "--data", str(d / "sim.npz"), "--out", str(blocker / "run")])
    one_line(code, capsys.readouterr().err, "--out folder", "is a file, not a folder")


@pytest.mark.skipif(not EXE.exists(), reason="rt-decoder console script not installed next to this Python")
def test_full_disk_during_train_leaves_no_checkpoint_tmp(tmp_path):
    pytest.importorskip("torch")
    rec = simulate_session(minutes=1.0, channels=20, bin_s=0.05, seed=1)
    data = save_npz(rec, tmp_path / "sim.npz")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("name: tiny\nmodel: {widths: [4], head_hidden: 16}\ntraining: {max_epochs: 2}\n")
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([str(EXE), "train", "--config", str(cfg), "--data", str(data), "--out", str(out)],
                       capture_output=True, text=True, timeout=180, preexec_fn=_limited(4_000), env=env)
    err_lines = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(err_lines) == 1 and "checkpoint.pt" in err_lines[0] and "cannot write" in err_lines[0]
    assert sorted(p.name for p in out.iterdir()) == [], sorted(p.name for p in out.iterdir())
