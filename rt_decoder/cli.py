"""`rt-decoder` command line: one sub-command per module in rt_decoder/commands/.

Each command module defines HELP (one line), add_arguments(parser) and run(args) -> int.
Modules keep heavy imports inside run(), so `rt-decoder --help` is fast and torch is imported
only by the commands that train. A user-facing error (RtDecoderError) becomes one line on
stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import RtDecoderError

COMMANDS = ("train", "evaluate", "replay", "run", "plot", "generate", "bench", "convert", "simulate", "demo", "task",
            "participant", "experiment")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rt-decoder",
        description="Real-time streaming BCI decoder: train a retention + UNet + FC decoder, export it "
        "to ONNX, and run it on Lab Streaming Layer spike streams inside a fixed latency budget.",
    )
    parser.add_argument("--version", action="version", version=f"rt-decoder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"rt_decoder.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"rt_decoder.commands.{name}":
                raise
            continue
        p = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "__doc__", None) or mod.HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except RtDecoderError as e:
        print(f"rt-decoder {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"rt-decoder {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
