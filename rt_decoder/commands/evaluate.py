"""Score an exported step graph on a recording, bin by bin, exactly as the runtime would run it.

The model is reset at the first bin of the chosen block and stepped through it one bin at a
time (what a user who starts streaming there sees). Decoders report R2, RMSE and Pearson r per
output, matched to the recording's behaviour columns by name; generative models report the
held-out log-likelihood and bits per spike against a constant-rate model of the training block.
The split is contiguous: train / val / test = first 70% / next 10% / last 20% by default.

  rt-decoder evaluate model.onnx --data session.npz --split test --json metrics.json
  rt-decoder evaluate model.onnx --data session.npz --baselines     (Wiener + Kalman side by side)
  rt-decoder evaluate --baselines --data session.npz --lag-bins 1   (baselines only)

With --log, re-run a session log written by `rt-decoder run --log` and check that the
predictions it recorded are reproduced exactly (no --data needed); a truncated log (no end
record, or fewer bins than it states: the writer was killed or its disk filled) is reported as
such and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rt_decoder.metrics import block_notes

HELP = "score a model on a recording's test block (R2/RMSE/r or bits per spike), or re-check a session log"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL.onnx", nargs="?", help="exported step graph with its model card "
                        "(optional with --baselines)")
    parser.add_argument("--data", metavar="FILE", help="recording in any supported format (npz, mat, nwb, h5, xdf)")
    parser.add_argument("--split", default="test", choices=("test", "val", "train", "all"),
                        help="which contiguous block to score (default: test)")
    parser.add_argument("--test-frac", type=float, default=None,
                        help="size of the test block, last part (default: the model's training split when DATA is the "
                             "recording it was trained on, else 0.2)")
    parser.add_argument("--val-frac", type=float, default=None, help="size of the validation block before it (default 0.1)")
    parser.add_argument("--bin-ms", type=float, default=None,
                        help="re-bin the recording to this width first (must match the model's bin width)")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON here")
    parser.add_argument("--log", metavar="FILE", help="re-run this session log offline and check the predictions match")
    parser.add_argument("--baselines", action="store_true",
                        help="also fit a Wiener and a Kalman filter on the train/val blocks of DATA and score them the "
                             "same way (at the model's lag, or --lag-bins)")
    parser.add_argument("--lag-bins", type=int, default=None,
                        help="baselines: predict bin k from bins <= k - L (default: the model's lag_bins, else 0)")
    parser.add_argument("--taps", type=int, default=10, help="baselines: Wiener history length in bins (default 10)")
    parser.add_argument("--save-baselines", metavar="DIR", help="baselines: write DIR/wiener.onnx and DIR/kalman.onnx")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def load_data(path: str, bin_ms: float | None, targets: str | None = None):
    """Any supported recording format (rt_decoder.loaders), with the behaviour columns of `targets`."""
    from ..loaders import load_recording

    return load_recording(path, bin_ms, targets)


def format_table(res: dict) -> str:
    """A small fixed-width table: one row per output (decoder) or the likelihood summary (generative)."""
    m = res["model"]
    head = (f"{res.get('model_type', '?')} on {res['block']} bins [{res['range'][0]}, {res['range'][1]}) "
            f"= {res['n_bins']} bins of {res['bin_s'] * 1000:g} ms, lag_bins={res['lag_bins']}")
    if "r2" not in m:
        return (f"{head}\n  {res['likelihood']} log-likelihood per bin {m['log_likelihood_per_bin']:.4f} "
                f"(constant-rate {m['const_log_likelihood_per_bin']:.4f})\n  bits per spike {m['bits_per_spike']:.4f} "
                f"over {m['n_spikes']:.0f} spikes")
    width = max(8, *(len(o) for o in res["outputs"]))
    units = [u or "?" for u in res.get("units") or [""] * len(res["outputs"])]
    uw = max(4, *(len(u) for u in units))
    lines = [head, f"  {'output':<{width}}  {'unit':<{uw}}  {'R2':>7}  {'RMSE':>9}  {'corr':>6}   (RMSE in the output's unit)"]
    for i, o in enumerate(res["outputs"]):
        lines.append(f"  {o:<{width}}  {units[i]:<{uw}}  {m['r2'][i]:7.3f}  {m['rmse'][i]:9.4g}  {m['corr'][i]:6.3f}")
    lines.append(f"  {'mean':<{width}}  {'':<{uw}}  {sum(m['r2']) / len(m['r2']):7.3f}")
    if res.get("nan_rows_excluded"):
        lines.append(f"  ({res['nan_rows_excluded']} bins with NaN behaviour excluded)")
    lines += [f"  WARNING: {note}" for note in block_notes(res["outputs"], m, res["block"])]
    return "\n".join(lines)


def _rerun_log(args: argparse.Namespace) -> int:
    from ..atomic import check_output, write_json
    from ..runtime.session_log import rerun_log

    if args.json:
        check_output(args.json, "--json file")
    res = rerun_log(args.model, args.log, threads=args.threads)
    summary = {k: v for k, v in res.items() if not hasattr(v, "shape")}
    exact = bool(res.get("exact", False))
    print(f"{args.log}: {res.get('bins', '?')} bins, {res.get('predictions', '?')} predictions re-run through "
          f"{Path(args.model).name}: {'reproduced exactly' if exact else 'NOT reproduced'} "
          f"(max |difference| {res.get('max_abs_diff', float('nan')):.3g})")
    if not res.get("model_matches", True):
        print("note: this model file is not the one the session logged (sha256 differs)")
    if not res.get("complete", True):
        print(f"TRUNCATED LOG: {res['truncated']}; only the bins found were re-checked")
    if args.json:
        write_json(args.json, summary, sort_keys=True)
        print(f"wrote {args.json}")
    return 0 if exact and res.get("complete", True) else 1


def provenance_warnings(card, model_path, rec, data_path) -> list[str]:
    """What a reader of the scores must know: the model came from other data, or is partial."""
    out = []
    theirs, ours = card.data_sha256, rec.fingerprint()
    if theirs and theirs != ours:
        out.append(f"{model_path} was trained on other data (sha256 {theirs[:12]}) than {data_path} "
                   f"(sha256 {ours[:12]}); these scores are on data it has not seen")
    elif not theirs:
        out.append(f"{model_path}: its card records no training-data fingerprint; cannot tell whether {data_path} was seen")
    if (card.extra or {}).get("partial"):
        out.append(f"{model_path} is partial: its training was interrupted (see its metrics.json)")
    return out


def choose_bounds(card, rec, val_frac: float | None, test_frac: float | None) -> dict:
    """Explicit fractions win; else the card's own split on its training recording; else 70/10/20."""
    from ..errors import DataError
    from ..evaluation import card_split
    from ..recording import split_bounds

    if card is not None and val_frac is None and test_frac is None:
        own = card_split(card, rec)
        if own is not None:
            print(f"split: the model's training split (same recording, sha256 {rec.fingerprint()[:12]})")
            return own
    val = 0.1 if val_frac is None else val_frac
    test = 0.2 if test_frac is None else test_frac
    if not (0 <= val < 1 and 0 < test < 1 and val + test < 1):
        raise DataError(f"{rec.source}: --val-frac {val} and --test-frac {test} must be fractions summing to < 1")
    return split_bounds(rec.n_bins, val=val, test=test)


def run(args: argparse.Namespace) -> int:
    from ..errors import DataError, ModelError

    if args.log:
        if not args.model:
            raise ModelError(f"{args.log}: --log needs the MODEL.onnx that ran the session")
        return _rerun_log(args)
    if not args.data:
        raise DataError("evaluate: --data FILE is required (or --log FILE to re-check a session log)")
    if not args.model and not args.baselines:
        raise ModelError("evaluate: give MODEL.onnx, or --baselines to score Wiener and Kalman filters on --data")
    from ..atomic import check_output, check_output_dir, write_json
    from ..evaluation import evaluate_decoder
    from ..step_model import StepModel

    if args.json:
        check_output(args.json, "--json file")
    if args.save_baselines:
        check_output_dir(args.save_baselines, "--save-baselines folder")
    model = StepModel(args.model, threads=args.threads) if args.model else None
    from ..loaders.targets import targets_of

    rec = load_data(args.data, args.bin_ms, targets_of(model.card) if model is not None else None)
    if model is not None:
        bounds = choose_bounds(model.card, rec, args.val_frac, args.test_frac)
        res = evaluate_decoder(model, rec, args.split, bounds, progress=not args.quiet)
        res["model_file"] = str(args.model)
    else:
        bounds = choose_bounds(None, rec, args.val_frac, args.test_frac)
        res = {"outputs": list(rec.behavior_names or []), "bin_s": rec.bin_s, "split": bounds, "block": args.split}
    res["data_file"] = str(args.data)
    res["data_sha256"] = rec.fingerprint()
    if model is not None:
        res["model_data_sha256"] = model.card.data_sha256
        res["model_run_id"] = (model.card.extra or {}).get("run_id", "")
        for line in provenance_warnings(model.card, args.model, rec, args.data):
            print(f"rt-decoder evaluate: warning: {line}", file=sys.stderr)
    if model is not None:
        print(format_table(res))
    if args.baselines:
        res["baselines"] = _baselines(args, rec, bounds, model)
    if args.json:
        write_json(args.json, res)
        print(f"wrote {args.json}")
    return 0


def _baselines(args: argparse.Namespace, rec, bounds: dict, model) -> dict:
    """Fit Wiener and Kalman on train/val of `rec`, score each step graph on the same block."""
    import tempfile

    from ..errors import DataError
    from ..evaluation import evaluate_baselines

    if model is not None and model.card.kind != "decoder":
        raise DataError(f"{args.model}: baselines are decoders; they cannot be compared with a {model.card.kind} model")
    lag = args.lag_bins if args.lag_bins is not None else (model.card.lag_bins if model is not None else 0)
    if lag < 0 or args.taps < 1:
        raise DataError(f"evaluate: --lag-bins must be >= 0 and --taps >= 1, got {lag}, {args.taps}")
    if rec.behavior is None:
        raise DataError(f"{rec.source}: has no behaviour to fit the baselines on")
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.save_baselines) if args.save_baselines else Path(tmp)
        results = evaluate_baselines(rec, bounds, lag, folder, args.split, taps=args.taps, progress=not args.quiet)
        for name, r in results.items():
            print(format_table(r))
            out[name] = {**r["model"], "lag_bins": lag}
            if args.save_baselines:
                print(f"wrote {folder / f'{name}.onnx'}")
    return out
