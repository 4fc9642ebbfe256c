"""Sample synthetic spike trains from a generative step graph, bin by bin (autoregressive).

Each bin is drawn from the model's next-bin prediction (Bernoulli spike probability or Poisson
rate, per the model card) and fed back as the next input. The result is a canonical .npz
(counts, bin_s, channel_names) that every other command accepts. With --compare, the
per-neuron rates, pairwise correlations of binned counts and Fano factors are compared with a
block of a real recording (binarized for a Bernoulli model); --report draws them as a PNG.

  rt-decoder generate gen.onnx --steps 20000 --seed 1 --out fake.npz --compare real.npz --report fake.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "sample spike trains from a generative model and compare their statistics with real data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL.onnx", help="generative step graph (model card kind 'generative')")
    parser.add_argument("--steps", type=int, required=True, help="number of bins to generate")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same sample (default 0)")
    parser.add_argument("--out", metavar="FILE.npz", required=True, help="write the generated counts here (canonical npz)")
    parser.add_argument("--burn-in", type=int, default=0, help="sampled bins to drop first (the state starts empty)")
    parser.add_argument("--compare", metavar="DATA", help="real recording to compare statistics with")
    parser.add_argument("--split", default="test", choices=("test", "val", "train", "all"),
                        help="block of the real recording to compare with (default: test; the model's own split "
                             "when DATA is its training recording, else the last 20%%)")
    parser.add_argument("--bin-ms", type=float, default=None, help="re-bin the real recording to this width first")
    parser.add_argument("--prime-bins", type=int, default=0,
                        help="with --compare: feed the first N real bins of the block before sampling, so the "
                             "sample starts from real activity instead of an empty state")
    parser.add_argument("--window", type=int, default=10, help="Fano factor window in bins (default 10)")
    parser.add_argument("--report", metavar="PNG", help="draw rates, correlations, Fano factors and rasters here")
    parser.add_argument("--json", metavar="FILE", help="write the summary statistics as JSON here")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..atomic import check_output, write_json
    from ..errors import DataError, where
    from ..evaluation import check_compatible
    from ..generation import compare_statistics, generate, report_png
    from ..recording import Recording, save_npz
    from ..step_model import StepModel
    from .evaluate import choose_bounds, load_data

    if args.steps < 1:
        raise DataError(f"generate: --steps must be >= 1, got {args.steps}")
    if args.burn_in < 0 or args.window < 2:
        raise DataError(f"generate: --burn-in must be >= 0 and --window >= 2, got {args.burn_in}, {args.window}")
    check_output(args.out, "--out file")
    for flag, path in (("--report", args.report), ("--json", args.json)):
        if path:
            check_output(path, f"{flag} file")
    model = StepModel(args.model, threads=args.threads)
    real = None
    if args.compare:
        rec = load_data(args.compare, args.bin_ms)
        check_compatible(model, rec)
        lo, hi = (0, rec.n_bins) if args.split == "all" else choose_bounds(model.card, rec, None, None)[args.split]
        real = rec.counts[lo:hi]
        if real.shape[0] < 2 * args.window:
            raise DataError(where(args.compare, f"the {args.split} block has only {real.shape[0]} bins"))
    prime = None
    if args.prime_bins:
        if real is None or args.prime_bins < 0 or args.prime_bins > real.shape[0]:
            raise DataError(f"generate: --prime-bins {args.prime_bins} needs --compare DATA with at least that many bins")
        prime = real[:args.prime_bins]
    counts, info = generate(model, args.steps, seed=args.seed, burn_in=args.burn_in, prime=prime,
                            progress=not args.quiet)
    card = model.card
    out = save_npz(Recording(counts=counts, bin_s=card.bin_s, channel_names=list(card.channel_names),
                             source=str(args.out), extra={"generated_seed": args.seed}), args.out)
    print(f"generated {args.steps} bins x {counts.shape[1]} channels ({info['likelihood']}) in "
          f"{info['seconds']:.2f} s: {info['steps_per_s']:.0f} steps/s -> {out}")
    stats = compare_statistics(counts, real, bin_s=card.bin_s, window=args.window,
                               binarize_real=info["likelihood"] == "bernoulli")
    s = stats["summary"]
    line = (f"rate {s['mean_rate_generated']:.2f} Hz, mean pairwise corr {s['mean_pairwise_corr_generated']:.3f}, "
            f"median Fano {s['median_fano_generated']:.2f}")
    print(f"generated: {line}")
    if real is not None:
        print(f"real ({args.split}, {real.shape[0]} bins{', binarized' if s['binarized_real'] else ''}): "
              f"rate {s['mean_rate_real']:.2f} Hz, mean pairwise corr {s['mean_pairwise_corr_real']:.3f}, "
              f"median Fano {s['median_fano_real']:.2f}")
        print(f"match: rate r = {s['rate_corr']:.3f}, pairwise-correlation r = {s['pairwise_corr_corr']:.3f}, "
              f"Fano r = {s['fano_corr']:.3f}")
    if args.report:
        report_png(stats, args.report, counts, real, title=f"{Path(args.model).name}: {args.steps} generated bins")
        print(f"wrote {args.report}")
    if args.json:
        write_json(args.json, {**s, **{k: v for k, v in info.items()}})
        print(f"wrote {args.json}")
    return 0
