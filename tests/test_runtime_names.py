"""How `rt-decoder run` finds its input and names its outputs (issue 12, defects 4-7): the input
is found first (the one that fits the model among several), the wait is shown, every outlet is
named after --output with a source_id unique to the run, and bad paths and budgets are refused
with one line."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from rt_decoder.errors import StreamError
from rt_decoder.runtime import lsl as L
from rt_decoder.runtime.loop import Runtime
from rt_decoder.runtime.probe import Consumer, RuntimeThread, linear_model, poisson_recording

pytestmark = pytest.mark.lsl

D = 37  # an unusual width: streams of other tests on this loopback do not fit this model
B = 0.02


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return linear_model(tmp_path_factory.mktemp("m") / "m37.onnx", n_channels=D, n_outputs=2, bin_s=B)


def _name() -> str:
    return "t" + uuid.uuid4().hex[:10]


def _cli(*argv: str, timeout: float = 60.0, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rt_decoder.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, **kw)


def _error_line(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


def _counts(name: str, channels: int):
    return L.make_outlet(name, "SpikeCounts", [f"c{i}" for i in range(channels)], 1.0 / B, fmt="int32",
                         source_id=f"test:{name}:{channels}")


# ---- defect 4: every auxiliary name derives from --output; source_ids unique per run ---------------

def test_outputs_named_after_output_and_found_by_plot(model_path):
    from rt_decoder.commands.plot import _names, add_arguments
    from rt_decoder.plot.streams import StreamWatcher

    name = _name()
    src = _counts(f"{name}-spikes", D)
    rts = [Runtime(model_path, f"{name}-spikes", output=f"{name}-dec", zeta_stream="{output}-zeta", budget_ms=1000.0)
           for _ in range(2)]
    threads = [RuntimeThread(rt).start() for rt in rts]
    try:
        lsl = L.pylsl()
        for suffix in ("dec", "dec-stats", "dec-zeta"):
            found = lsl.resolve_bypred(f"name='{name}-{suffix}'", 2, 5.0)
            assert len(found) == 2, suffix  # two decoders with one --output: both visible ...
            sids = {f.source_id() for f in found}
            assert len(sids) == 2 and all(r.run_id in " ".join(sids) for r in rts)  # ... and told apart
        from rt_decoder.plot.streams import read_meta

        inlet = lsl.StreamInlet(lsl.resolve_bypred(f"name='{name}-dec-stats'", 1, 5.0)[0])
        meta = read_meta(inlet.info(timeout=5.0))  # every stats channel states its unit, as LabRecorder keeps it
        assert meta.labels == L.STATS_LABELS and meta.units == ["count", "ms", "bins", "count", "count", "bins"]
        del inlet
        # `plot --decoder X` looks for X-stats and X-zeta: the names the runtime published
        p = argparse.ArgumentParser()
        add_arguments(p)
        names = _names(p.parse_args(["--decoder", f"{name}-dec"]))
        assert (names.stats, names.zeta) == (f"{name}-dec-stats", f"{name}-dec-zeta")
        watchers = [StreamWatcher(n, window_s=5.0).start() for n in (names.decoder, names.stats, names.zeta)]
        t_end = time.monotonic() + 10
        while time.monotonic() < t_end and not all(w.state == "connected" for w in watchers):
            for w in watchers:
                w.poll()
            time.sleep(0.05)
        assert all(w.state == "connected" for w in watchers)
        for w in watchers:
            w.stop()
    finally:
        for th in threads:
            th.join()
    del src


def test_cli_default_stats_name_follows_output(model_path):
    from rt_decoder.commands.run import DEFAULTS, resolve_options

    a = argparse.Namespace(config=None, **{k: None for k in DEFAULTS})
    a.output = "mydec"
    opts = resolve_options(a)
    rt = Runtime(model_path, "x", output=opts["output"], stats=opts["stats"], zeta_stream="{output}-zeta")
    assert (rt.stats_name, rt.zeta_name) == ("mydec-stats", "mydec-zeta")
    a.stats = "none"
    assert Runtime(model_path, "x", output="mydec", stats=resolve_options(a)["stats"]).stats_name is None


# ---- defect 5: among several spike streams, the one that fits the model --------------------------

def test_default_input_picks_the_stream_that_fits(model_path):
    name = _name()
    wrong = _counts(f"{name}-a", 24)
    right = _counts(f"{name}-b", D)
    rt = Runtime(model_path, None, output=f"{name}-dec", stats=None, budget_ms=1000.0, resolve_timeout=5.0)
    th = RuntimeThread(rt).start()
    try:
        assert rt.info.name() == f"{name}-b"
        dec = Consumer(f"{name}-dec")
        right.wait_for_consumers(5.0)
        x = np.random.default_rng(0).poisson(0.5, size=(10, D)).astype(np.int32)
        t0 = L.pylsl().local_clock()
        right.push_chunk(x, [t0 + (i + 1) * B for i in range(10)])
        assert dec.wait_for(10, 5.0)
        dec.stop()
    finally:
        th.join()
    del wrong


def test_same_name_twice_picks_the_one_that_fits(model_path):
    name = _name()
    wrong = _counts(f"{name}-spikes", 24)
    right = _counts(f"{name}-spikes", D)
    rt = Runtime(model_path, f"{name}-spikes", output=f"{name}-dec", stats=None, resolve_timeout=5.0)
    th = RuntimeThread(rt).start()
    try:
        assert rt.info.source_id() == right.get_info().source_id()
    finally:
        th.join()
    del wrong


def test_ambiguous_input_lists_both_and_how_to_choose(model_path):
    name = _name()
    a, b = _counts(f"{name}-spikes", D), _counts(f"{name}-spikes", D)
    a.get_info()  # both alive
    with pytest.raises(StreamError) as e:
        Runtime(model_path, f"{name}-spikes", output=f"{name}-dec", stats=None, resolve_timeout=5.0).run(max_bins=1)
    msg = str(e.value)
    assert "2 streams fit" in msg and "--input source_id=X" in msg
    assert f"test:{name}-spikes:{D}" in msg and "\n" not in msg
    # none fits: each is named with the reason
    c = _counts(f"{name}-other", 24)
    d = _counts(f"{name}-other", 25)
    with pytest.raises(StreamError, match="2 streams found, none fits") as e:
        Runtime(model_path, f"{name}-other", output=f"{name}-dec", stats=None, resolve_timeout=5.0).run(max_bins=1)
    assert "has 24 channels" in str(e.value) and "has 25 channels" in str(e.value)
    del b, c, d


# ---- defect 6: the input first, then the outlets; the wait is shown ----------------------------------

def test_no_input_announces_nothing_and_shows_the_wait(model_path):
    name = _name()
    proc = subprocess.Popen([sys.executable, "-m", "rt_decoder.cli", "run", str(model_path), "--input", f"{name}-nosuch",
                             "--output", f"{name}-dec", "--resolve-timeout", "3"], stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    assert not L.pylsl().resolve_bypred(f"name='{name}-dec' or name='{name}-dec-stats'", 0, 1.0), \
        "outlets announced while the input is still missing"
    err = proc.communicate(timeout=30)[1]
    lines = err.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in err
    waiting = [ln for ln in lines if ln.startswith("rt-decoder run: waiting up to 3 s for the input (name=")]
    assert len(waiting) == 1 and f"{name}-nosuch" in waiting[0], err
    assert "no LSL stream found after 3 s" in lines[-1]
    assert f"{name}-dec" not in err  # the decoder's own outputs are not among the "visible" streams


# ---- defect 7: refuse with one line ----------------------------------------------------------------

def test_log_in_a_missing_directory_is_refused(model_path, tmp_path):
    missing = tmp_path / "nonexistent_dir"
    line = _error_line(_cli("run", str(model_path), "--log", str(missing / "x.log"), "--resolve-timeout", "0.2"))
    assert "nonexistent_dir" in line and "does not exist" in line
    assert not missing.exists()


@pytest.mark.parametrize("budget", ["-1", "0", "nan"])
def test_bad_budget_is_refused(model_path, budget):
    line = _error_line(_cli("run", str(model_path), "--budget-ms", budget, "--resolve-timeout", "0.2"))
    assert "--budget-ms must be a positive number" in line


def test_convert_refuses_to_overwrite_its_input(tmp_path):
    from rt_decoder.recording import save_npz

    src = save_npz(poisson_recording(50, 4), tmp_path / "rec.npz")
    before = src.read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.npz").symlink_to(src)
    for out in (str(src), str(tmp_path / "sub" / ".." / "rec.npz"), str(tmp_path / "rec"), str(tmp_path / "link.npz")):
        line = _error_line(_cli("convert", str(src), out))
        assert "is the input" in line, out
    assert src.read_bytes() == before
