"""The installed package, as a lab uses it after `pip install rt-decoder`: a wheel built from this
source, installed into a fresh venv, run from a folder outside the checkout. The shipped configs
must come with it (`train --config default`, `--config NAME`, the demo's default config).

The fresh venv reuses this venv's installed dependencies (numpy, torch, onnxruntime, ...) through
a .pth line, so nothing is downloaded; rt_decoder itself comes only from the wheel (this venv's
editable hook is a .pth file too, and .pth files are not read from a path a .pth line adds).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(cmd: list, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}   # only the wheel's code
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(bin folder of a fresh venv with the wheel installed, a work folder outside the checkout)."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / "README.md", src)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("rt_decoder", "training"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=ignore)
    r = _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist"], src)
    assert r.returncode == 0, r.stderr
    (wheel,) = (tmp / "dist").glob("rt_decoder-*.whl")
    env = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    py = env / "bin" / "python"
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp).stdout.strip())
    (site / "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "-q", wheel], tmp)
    assert r.returncode == 0, r.stderr
    work = tmp / "elsewhere"
    work.mkdir()
    return env / "bin", work


def test_the_wheel_ships_the_configs_and_rt_decoder_comes_from_it(installed):
    bin_dir, work = installed
    code = ("import rt_decoder, training.config as c, training.pipeline; from rt_decoder.configs import resolve, shipped; "
            "print(rt_decoder.__file__); print(c.load_config('default')['_source']); print(resolve(None)); "
            "print(' '.join(shipped()))")
    r = _run([bin_dir / "python", "-c", code], work)
    assert r.returncode == 0, r.stderr
    where, default_src, demo_default, names = r.stdout.strip().splitlines()
    venv_root = str(bin_dir.parent)
    assert where.startswith(venv_root) and not where.startswith(str(ROOT))
    assert default_src.startswith(venv_root) and default_src.endswith("rt_decoder/configs/default.yaml")
    assert demo_default == default_src                   # the demo trains with it, no Wiener fall-back
    assert {"default", "chestek_contdata95", "runtime"} <= set(names.split())


def test_installed_train_help_and_config_names_resolve(installed):
    bin_dir, work = installed
    exe = bin_dir / "rt-decoder"
    r = _run([exe, "train", "--help"], work)
    assert r.returncode == 0 and "--config" in r.stdout and "chestek_contdata95" in r.stdout, r.stderr
    # the config resolves (by name, and by default): the only complaint left is the absent data
    for extra in (["--config", "default"], ["--config", "chestek_contdata95"], ["--config", "configs/default.yaml"], []):
        r = _run([exe, "train", *extra, "--data", "absent.npz", "--out", "run"], work)
        assert r.returncode == 2 and "absent.npz: no such file or folder" in r.stderr, (extra, r.stderr)
        assert "config" not in r.stderr.split("error:")[-1], (extra, r.stderr)
    r = _run([exe, "train", "--config", "nonesuch", "--data", "absent.npz"], work)
    assert r.returncode == 2 and "no shipped config of that name" in r.stderr and "default" in r.stderr


def test_config_names_resolve_in_the_checkout_too(tmp_path, monkeypatch):
    """`configs/x.yaml` (the checkout's link), `x` and `x.yaml` name the same shipped file; `run
    --config runtime` reads the shipped runtime defaults; a missing name lists what is shipped."""
    from rt_decoder.commands.run import DEFAULTS, resolve_options
    from rt_decoder.configs import CONFIG_DIR, resolve
    from rt_decoder.errors import ConfigError

    assert (ROOT / "configs").resolve() == CONFIG_DIR
    for spec in ("default", "default.yaml", ROOT / "configs" / "default.yaml"):
        assert resolve(spec).resolve() == CONFIG_DIR / "default.yaml"
    monkeypatch.chdir(tmp_path)                                   # outside the checkout
    assert resolve("configs/chestek_contdata95.yaml") == CONFIG_DIR / "chestek_contdata95.yaml"
    (tmp_path / "default.yaml").write_text("name: mine\n")        # a file of that name wins
    assert resolve("default.yaml") == Path("default.yaml")
    with pytest.raises(ConfigError, match="no shipped config of that name.*chestek_contdata95"):
        resolve("chestek")

    class A:
        pass
    a = A()
    for k in DEFAULTS:
        setattr(a, k, None)
    a.config = "runtime"
    assert resolve_options(a)["budget_ms"] == DEFAULTS["budget_ms"]
    a.config = "nonesuch"
    with pytest.raises(ConfigError, match="runtime"):
        resolve_options(a)
