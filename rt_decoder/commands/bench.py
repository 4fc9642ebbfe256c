"""Benchmarks that print the figures we report (README). Each target lives with the code it measures:

  latency     bin close -> prediction received by an LSL consumer (rt_decoder/runtime/bench.py)
  throughput  sustained bins/s on one core without misses (rt_decoder/runtime/bench.py)
  soak        a long session checked from outside: lost / duplicated / late bins, memory (rt_decoder/runtime/soak.py)
  accuracy    train + evaluate on the real datasets vs Wiener and Kalman (training/bench.py; needs torch)
  generate    autoregressive sampling speed and fidelity (training/bench.py; needs torch to train)
  sessions    across days: held-in/held-out R2 vs calibration minutes, normalized latency (training/sessions_bench.py)
"""

from __future__ import annotations

import argparse
import importlib

HELP = "measure latency, throughput, accuracy or generation speed and print the figures (--json FILE for machines)"

TARGETS = {
    "latency": ("rt_decoder.runtime.bench", "latency"),
    "throughput": ("rt_decoder.runtime.bench", "throughput"),
    "soak": ("rt_decoder.runtime.soak", "soak"),
    "accuracy": ("training.bench", "accuracy"),
    "generate": ("training.bench", "generate"),
    "sessions": ("training.sessions_bench", "sessions"),
    "closed-loop": ("rt_decoder.closedloop.bench", "closed_loop"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, (module, func) in TARGETS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is None or not module.startswith(e.name):
                raise
            continue
        text = getattr(mod, f"{func.upper()}_HELP", name)
        p = sub.add_parser(name, help=text, description=f"rt-decoder bench {name}: {text}",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        getattr(mod, f"add_{func}_arguments")(p)
        p.set_defaults(_bench=getattr(mod, f"run_{func}"))


def run(args: argparse.Namespace) -> int:
    return int(args._bench(args) or 0)
