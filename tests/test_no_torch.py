"""The online side never imports torch: import every rt_decoder module in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import importlib, pkgutil, sys
import rt_decoder
names = [m.name for m in pkgutil.walk_packages(rt_decoder.__path__, "rt_decoder.")]
names = [n for n in names if not n.startswith("rt_decoder.plot")]
for n in names:
    importlib.import_module(n)
from rt_decoder.cli import build_parser
build_parser()
print(len(names), "torch" in sys.modules)
"""


def test_rt_decoder_never_imports_torch():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    n, has_torch = out.stdout.split()
    assert int(n) >= 10
    assert has_torch == "False", "some rt_decoder module imports torch"


def test_no_torch_import_statement_in_rt_decoder():
    offenders = [str(p) for p in (ROOT / "rt_decoder").rglob("*.py")
                 if any(line.strip().startswith(("import torch", "from torch")) for line in p.read_text().splitlines())]
    assert offenders == []
