"""tools/ablate.py on a tiny synthetic recording: 2 settings x 1 seed train, export, score and land
in the JSON, table and figure; a rerun skips the rows already there; --confirm picks the best."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from rt_decoder.recording import Recording, save_npz  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "ablate.py"


def _recording(path: Path) -> Path:
    rng = np.random.default_rng(0)
    T, D = 900, 12
    v = np.cumsum(rng.normal(size=(T, 2)), axis=0) * 0.1
    counts = rng.poisson(np.exp(0.3 + 0.5 * np.tanh(v @ rng.normal(size=(2, D)))))
    return save_npz(Recording(counts=counts, bin_s=0.05, behavior=v, behavior_names=["x", "y"],
                              source="<synthetic>").validate(), path)


def _tool():
    spec = importlib.util.spec_from_file_location("ablate_tool", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Done:
    def __init__(self, returncode: int, stderr: str):
        self.returncode, self.stderr = returncode, stderr


def _run(capsys, *args: str) -> _Done:
    code = _tool().main(list(args))
    return _Done(code, capsys.readouterr().err)


def test_ablate_two_settings_resume_and_confirm(tmp_path, capsys):
    data = _recording(tmp_path / "syn.npz")
    out = tmp_path / "abl"
    common = ["--data", f"syn={data}", "--out", str(out), "--time-limit", "3", "--max-epochs", "2"]
    p = _run(capsys, *common, "--settings", "default", "head128")
    assert p.returncode == 0, p.stderr
    rows = json.loads((out / "ablate.json").read_text())
    assert sorted(r["setting"] for r in rows) == ["default", "head128"]
    base = _tool().base_id()
    for r in rows:
        assert r["dataset"] == "syn" and r["seed"] == 0 and r["epochs"] <= 2 and r["base"] == base
        assert np.isfinite(r["r2"]) and r["train_cpu_s"] >= 0 and r["epochs"] >= 1
        assert r["precision"] in ("fp32", "bf16") and r["cpu"]
    md = (out / "ablate.md").read_text()
    assert "| head128 |" in md and "| default |" in md
    assert (out / "ablate.png").read_bytes()[:4] == b"\x89PNG"
    # rerun: nothing to do, rows unchanged
    p = _run(capsys, *common, "--settings", "default", "head128")
    assert p.returncode == 0 and "0 runs to do" in p.stderr
    assert json.loads((out / "ablate.json").read_text()) == rows
    # confirm: default + the best 1 setting, on another seed
    p = _run(capsys, *common, "--confirm", "1", "--seeds", "1")
    assert p.returncode == 0, p.stderr
    rows2 = json.loads((out / "ablate.json").read_text())
    assert sorted((r["setting"], r["seed"]) for r in rows2[2:]) == [("default", 1), ("head128", 1)]
    s = json.loads((out / "ablate_summary.json").read_text())
    assert s["settings"]["head128"]["per_dataset"]["syn"]["seeds"] == [0, 1]


def test_ablate_bad_setting_is_one_line(tmp_path, capsys):
    p = _run(capsys, "--data", "syn=/nonexistent.npz", "--out", str(tmp_path), "--settings", "nope")
    assert p.returncode == 2 and "unknown nope" in p.stderr and "Traceback" not in p.stderr


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_every_setting_changes_what_it_names_and_nothing_else():
    """Each setting is a valid config that differs from the current default in exactly its keys
    (a setting the default has since adopted would measure nothing)."""
    tool = _tool()
    base = _flat(tool.config_for("default", 0, 10.0, 2))
    for name, over in tool.SETTINGS.items():
        cfg = _flat(tool.config_for(name, 0, 10.0, 2))
        changed = {k for k in cfg if k != "name" and cfg[k] != base.get(k)}
        assert changed == ({k for k, v in over.items() if base.get(k) != v}), name
        assert changed or name == "default", f"{name} is the default now"
    assert _flat(tool.config_for("levels4", 0, 10.0, 2))["retention.levels"] == 4


def test_base_id_ignores_keys_added_later_at_their_neutral_value(tmp_path):
    """Rows keep naming the default they were measured around when a new training key arrives at a
    value that changes nothing (training.input_gain 0); setting it changes the id."""
    import yaml

    tool = _tool()
    from training.config import load_config

    cfg = load_config("default")
    ids = []
    for gain in (0.0, 0.2):
        cfg["training"]["input_gain"] = gain
        path = tmp_path / f"g{gain}.yaml"
        path.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if not k.startswith("_")}))
        ids.append(tool.base_id(str(path)))
    del cfg["training"]["input_gain"]
    path = tmp_path / "without.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if not k.startswith("_")}))
    assert tool.base_id(str(path)) == ids[0] != ids[1]
    assert ids[1] == tool.base_id()          # the shipped default sets 0.2


def test_seed_label_says_when_recordings_had_different_seeds():
    seed_label = _tool().seed_label

    def setting(*counts):
        return {"per_dataset": {f"d{i}": {"seeds": list(range(c))} for i, c in enumerate(counts)}}

    assert seed_label(setting(1, 1)) == "1 seed"
    assert seed_label(setting(3, 3, 3)) == "3 seeds"
    assert seed_label(setting(1, 3, 2)) == "1-3 seeds"
