"""Training configs as data: YAML -> a validated nested dict, every problem one ConfigError line
naming the file and the key ("configs/x.yaml: training.lr must be a positive number, got 'fast'").

DEFAULTS is the schema: every key a config may set, with its default. Unknown keys are errors
(a typo must not silently train with the default).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from rt_decoder.errors import ConfigError, where
from rt_decoder.loaders.targets import parse_targets

DEFAULTS: dict[str, Any] = {
    "name": "model",
    "data": None,                   # recording path (relative to the config file or cwd); --data overrides
    "bin_ms": None,                 # re-bin to this width; None keeps the recording's
    "kind": "decoder",              # decoder | generative
    "targets": "cursor",            # behaviour to decode: cursor | force | emg | all, or a comma list (cursor,emg)
    "lag_bins": 0,                  # 0: zeta including bin k predicts y_k; 1: thesis eq. 3.6
    "split": {"val": 0.1, "test": 0.2},
    "retention": {
        "decays": [0.5, 0.875, 0.96875],
        "quantizer": "levels",      # binary | levels | learned
        "levels": 4,
        "layout": "raster",         # raster | similarity | map (retention.map) | auto (map if given, else similarity)
        "map": None,                # electrode map: rows of channel numbers (0-based), -1 = no electrode
        "canvas": None,             # [H, W]; None: smallest square, side a multiple of 8 (>= 16); "fit": smallest
                                    # near-square (W/H <= 1.5) whose sides the UNet's levels divide
    },
    "model": {
        "widths": [16, 32],
        "head_hidden": 256,
        "head_layers": 1,           # hidden FC layers in the decoder head
        "dropout": 0.1,
        "likelihood": None,         # gaussian for decoders; bernoulli | poisson for generative
        "coupling_rank": 0,         # generative: rank of the all-to-all coupling path from every neuron's zeta (0: none)
        "self_gain_max": None,      # generative: bound on each neuron's net self-excitation through its own history
                                    # (GenerativeHead.self_gain; 0 = net refractory, a stable GLM's; null: unbounded).
                                    # Set it (and saturation_penalty) where train warns of runaway sampling: on
                                    # mc_maze_small it stops the runaway at ~0.03 bits/spike (README); with glm_base
                                    # it bounds what the network adds to the GLM
        "saturation_penalty": 0.0,  # generative: weight of the penalty on top-level firing (every bin or every other bin)
                                    # that sustains itself (Net.saturation_excess; 0: off; 1 in chestek_generative;
                                    # with glm_base: beyond what the GLM alone sustains)
        "glm_base": False,          # generative (poisson): the log-rate is the coupled GLM's (fitted first, on the
                                    # same split; training/glm.py) plus the network's, which starts at zero and is
                                    # early-stopped on validation: the model contains its reference (README)
        "stack": "none",            # a second state over the first FC layer's features (training/stacked.py):
                                    # none | retention | gated | leaky | gru | gru2; trained on training.window x streams
        "stack_size": 256,          # its width
        "dropout_mask": "bernoulli",  # bernoulli (torch's) | bytes: the stacked net's masks from random bytes, p
                                    # rounded to 1/256; 3x cheaper on CPU (training/model.py ByteDropout)
        "linear_skip": False,       # model.stack: a linear map from the zeta image added to the output (a Wiener path)
        "stem_bias": True,          # false: the UNet's convs (stem and every level) have no bias: silent pixels give zero features
                                    # (with it, Adam could kill every FC unit in the first epoch: training/model.py UNet)
    },
    "training": {
        "mode": "offline",          # offline (precomputed zeta, shuffled batches) | online (windows, TBPTT)
        "batch_size": 256,
        "lr": 0.002,
        "weight_decay": 0.01,
        "max_epochs": 60,
        "patience": 10,
        "keep": "best",             # best: the best-validation weights (early stopping after `patience` epochs);
                                    # last: the weights at the end of the cosine schedule, no early stopping
        "warmup_epochs": 1,
        "window": 128,              # online mode: bins per truncated-BPTT window
        "streams": 32,              # online mode and model.stack: parallel contiguous streams per batch; auto (model.stack):
                                    # 16-32, a batch of about 1/16 of the training block (training/stacked.py auto_streams)
        "seed": 0,
        "time_limit_s": None,
        "threads": 0,               # torch threads; 0 = auto: the cores idle when training starts (>= 1),
                                    # since on a busy 2-core machine 2 threads ran 10x slower than 1
        "init_from": None,          # a generative checkpoint whose UNet initialises the decoder
        "input_noise": 0.0,         # std of Gaussian noise added to zeta during training
        "precision": "fp32",        # fp32 | bf16: the stacked net's training forward in bfloat16 autocast (weights and
                                    # loss stay fp32; export is fp32) | auto: bf16 where the CPU has bf16 units
        "input_offset": 0.0,        # a per-channel offset added to zeta, held over a window and shared by every decay
                                    # (a baseline-rate shift); its std in units of each channel's std in the train block
        "input_gain": 0.0,          # a per-channel gain exp(N(0, input_gain)) on zeta, held over a window (a change in
                                    # a unit's amplitude or threshold: the multiplicative half of day-to-day drift)
        "input_drop": 0.0,          # probability that a channel is silenced for a whole window (a lost electrode)
        "huber": 0.0,               # decoders: > 0 trains on a Huber loss, linear beyond this many output sds
    },
    "baselines": {
        "enabled": True,
        "lag_bins": None,           # None: the model's lag_bins
        "which": ["gru", "tcfnn", "mlp", "wiener", "kalman"],   # trained beside our model, same split
        "jobs": 1,                  # worker processes fitting the references while our model trains (1 thread
                                    # each); 1 = one after another after our model; 0 = auto (one per core)
        "gru": None,                # overrides of training/gru.py HPARAMS, e.g. {hidden: 128}
        "tcfnn": None,              # overrides of training/tcfnn.py HPARAMS
        "mlp": None,                # overrides of training/mlp.py HPARAMS
        "glm": None,                # generative models: overrides of training/glm.py HPARAMS (the reference of
                                    # a generative model is always the coupled Poisson GLM; `which` is for decoders)
    },
    "multisession": {               # several --data files (training/multisession.py, DESIGN §10)
        "enabled": False,           # true: multi-session training even for a single file
        "readin": "linear",         # linear: a D_s x P map + offset per session | gain: per-channel gain + offset
        "readin_l2": 0.001,         # penalty on a read-in's departure from its name-matched identity start
        "output_affine": True,      # a per-session gain and offset on the normalized outputs
        "shards": 0,                # 0: every rank loads every session, each batch split across ranks | N: sessions
                                    # dealt into N shards (rank r loads only shards r, r+world, ...), a step = one
                                    # batch from each shard (training/corpus.py)
        "memmap": False,            # true: zeta, inputs and targets cached on disk per session and memory-mapped
        "cache_dir": None,          # the cache folder for memmap (default: OUT/cache)
    },
}

REFERENCES = ("gru", "tcfnn", "mlp", "wiener", "kalman")
GENERATIVE_REFERENCES = ("glm",)

CHOICES = {
    "kind": ("decoder", "generative"),
    "retention.quantizer": ("binary", "levels", "learned"),
    "retention.layout": ("raster", "similarity", "map", "auto"),
    "model.likelihood": (None, "gaussian", "bernoulli", "poisson"),
    "model.stack": ("none", "retention", "gated", "leaky", "gru", "gru2"),
    "training.mode": ("offline", "online"),
    "training.keep": ("best", "last"),
    "training.precision": ("fp32", "bf16", "auto"),
    "model.dropout_mask": ("bernoulli", "bytes"),
    "multisession.readin": ("linear", "gain"),
}


def _merge(base: dict, over: dict, src: str, prefix: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        path = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(where(src, f"unknown key {path!r} (known: {', '.join(sorted(base))})"))
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(where(src, f"{path} must be a mapping, got {value!r}"))
            out[key] = _merge(base[key], value, src, path + ".")
        else:
            out[key] = value
    return out


def _get(cfg: dict, path: str) -> Any:
    v = cfg
    for part in path.split("."):
        v = v[part]
    return v


def _num(cfg: dict, src: str, path: str, lo: float | None = None, hi: float | None = None,
         integer: bool = False, optional: bool = False, lo_open: bool = False) -> None:
    v = _get(cfg, path)
    if v is None and optional:
        return
    kind = "an integer" if integer else "a number"
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (not integer or float(v).is_integer())
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v <= hi
    if not ok:
        rng = f" {'>' if lo_open else '>='} {lo}" if lo is not None else ""
        rng += f" and <= {hi}" if hi is not None else ""
        raise ConfigError(where(src, f"{path} must be {kind}{rng}, got {v!r}"))


def validate(cfg: dict, src: str) -> dict:
    """Types and ranges of every value; returns cfg (with likelihood filled in)."""
    for path, choices in CHOICES.items():
        if _get(cfg, path) not in choices:
            raise ConfigError(where(src, f"{path} must be one of {', '.join(map(str, choices))}, got {_get(cfg, path)!r}"))
    _num(cfg, src, "bin_ms", lo=0, lo_open=True, optional=True)
    parse_targets(cfg["targets"], f"{src}: targets")
    _num(cfg, src, "lag_bins", lo=0, hi=1, integer=True)
    _num(cfg, src, "split.val", lo=0, hi=0.5, lo_open=True)
    _num(cfg, src, "split.test", lo=0, hi=0.5, lo_open=True)
    decays = cfg["retention"]["decays"]
    if not isinstance(decays, list) or not decays or not all(
            isinstance(g, (int, float)) and not isinstance(g, bool) and 0 <= g < 1 for g in decays):
        raise ConfigError(where(src, f"retention.decays must be a non-empty list of numbers in [0, 1), got {decays!r}"))
    levels = cfg["retention"]["levels"]
    if isinstance(levels, str) and levels != "auto":
        raise ConfigError(where(src, f"retention.levels must be an integer >= 2 and <= 256, or auto, got {levels!r}"))
    if levels != "auto":      # auto: chosen from the training block (training/data.py resolve_levels)
        _num(cfg, src, "retention.levels", lo=2, hi=256, integer=True)
    canvas = cfg["retention"]["canvas"]
    if canvas is not None and canvas != "fit" and not (isinstance(canvas, list) and len(canvas) == 2
                                                       and all(isinstance(c, int) and c > 0 for c in canvas)):
        raise ConfigError(where(src, f"retention.canvas must be [H, W] positive integers, fit or null, got {canvas!r}"))
    emap = cfg["retention"]["map"]
    if emap is not None and not (isinstance(emap, list) and emap and all(
            isinstance(row, list) and row and all(isinstance(v, int) and not isinstance(v, bool) for v in row) for row in emap)
            and len({len(row) for row in emap}) == 1):
        raise ConfigError(where(src, "retention.map must be a grid: equal-length rows of channel numbers (-1 = none)"))
    if cfg["retention"]["layout"] == "map" and emap is None:
        raise ConfigError(where(src, "retention.layout map needs retention.map (rows of channel numbers)"))
    widths = cfg["model"]["widths"]
    if not isinstance(widths, list) or not widths or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
        raise ConfigError(where(src, f"model.widths must be a non-empty list of positive integers, got {widths!r}"))
    _num(cfg, src, "model.head_hidden", lo=0, integer=True)
    _num(cfg, src, "model.head_layers", lo=1, hi=4, integer=True)
    _num(cfg, src, "model.coupling_rank", lo=0, hi=4096, integer=True)
    _num(cfg, src, "model.self_gain_max", lo=-20, hi=20, optional=True)
    _num(cfg, src, "model.saturation_penalty", lo=0, hi=1000)
    _num(cfg, src, "model.dropout", lo=0, hi=0.9)
    _num(cfg, src, "model.stack_size", lo=1, integer=True)
    if cfg["model"]["stack"] != "none":
        if cfg["kind"] != "decoder":
            raise ConfigError(where(src, "model.stack is for decoders; a generative model has no stacked state"))
        if cfg["training"]["mode"] != "offline":
            raise ConfigError(where(src, "model.stack trains on windows of precomputed zeta: it needs training.mode offline "
                                         "(and a fixed quantizer)"))
        if cfg["model"]["head_hidden"] < 1 or cfg["model"]["head_layers"] != 2:
            raise ConfigError(where(src, "model.stack sits between the head's two FC layers: it needs model.head_layers 2 "
                                         "and model.head_hidden >= 1"))
    t = "training."
    _num(cfg, src, t + "batch_size", lo=1, integer=True)
    _num(cfg, src, t + "lr", lo=0, lo_open=True)
    _num(cfg, src, t + "weight_decay", lo=0)
    _num(cfg, src, t + "max_epochs", lo=1, integer=True)
    _num(cfg, src, t + "patience", lo=1, integer=True)
    _num(cfg, src, t + "warmup_epochs", lo=0, integer=True)
    _num(cfg, src, t + "window", lo=2, integer=True)
    if cfg["training"]["streams"] != "auto":
        _num(cfg, src, t + "streams", lo=1, integer=True)
    elif cfg["model"]["stack"] == "none":
        raise ConfigError(where(src, "training.streams auto sizes model.stack's window batches; without a stack it needs a number"))
    _num(cfg, src, t + "seed", lo=0, integer=True)
    _num(cfg, src, t + "time_limit_s", lo=0, lo_open=True, optional=True)
    _num(cfg, src, t + "threads", lo=0, integer=True)
    _num(cfg, src, t + "input_noise", lo=0)
    _num(cfg, src, t + "input_offset", lo=0)
    _num(cfg, src, t + "input_gain", lo=0)
    _num(cfg, src, t + "input_drop", lo=0, hi=0.9)
    _num(cfg, src, t + "huber", lo=0)
    _num(cfg, src, "baselines.lag_bins", lo=0, hi=1, integer=True, optional=True)
    _num(cfg, src, "baselines.jobs", lo=0, integer=True)
    which = cfg["baselines"]["which"]
    if not isinstance(which, list) or not all(w in REFERENCES for w in which):
        raise ConfigError(where(src, f"baselines.which must be a list of {', '.join(REFERENCES)}, got {which!r}"))
    for name in ("gru", "tcfnn", "mlp", "glm"):
        if cfg["baselines"][name] is not None and not isinstance(cfg["baselines"][name], dict):
            raise ConfigError(where(src, f"baselines.{name} must be a mapping of settings or null, got {cfg['baselines'][name]!r}"))
    for path in ("name",):
        if not isinstance(_get(cfg, path), str) or not _get(cfg, path):
            raise ConfigError(where(src, f"{path} must be a non-empty string, got {_get(cfg, path)!r}"))
    _num(cfg, src, "multisession.readin_l2", lo=0)
    if not isinstance(cfg["model"]["linear_skip"], bool):
        raise ConfigError(where(src, f"model.linear_skip must be true or false, got {cfg['model']['linear_skip']!r}"))
    if cfg["model"]["linear_skip"] and cfg["model"]["stack"] == "none":
        raise ConfigError(where(src, "model.linear_skip belongs to the stacked decoder: it needs a model.stack"))
    if not isinstance(cfg["model"]["stem_bias"], bool):
        raise ConfigError(where(src, f"model.stem_bias must be true or false, got {cfg['model']['stem_bias']!r}"))
    if not isinstance(cfg["multisession"]["enabled"], bool) or not isinstance(cfg["multisession"]["output_affine"], bool):
        raise ConfigError(where(src, "multisession.enabled and multisession.output_affine must be true or false"))
    _num(cfg, src, "multisession.shards", lo=0, integer=True)
    if not isinstance(cfg["multisession"]["memmap"], bool):
        raise ConfigError(where(src, "multisession.memmap must be true or false"))
    if cfg["multisession"]["cache_dir"] is not None and not isinstance(cfg["multisession"]["cache_dir"], str):
        raise ConfigError(where(src, f"multisession.cache_dir must be a folder path or null, got {cfg['multisession']['cache_dir']!r}"))
    data = cfg["data"]
    if isinstance(data, list) and data and all(isinstance(d, str) for d in data):
        pass
    elif data is not None and not isinstance(data, str):
        raise ConfigError(where(src, f"data must be a file path, a list of them, or null, got {data!r}"))
    for path in ("training.init_from",):
        if _get(cfg, path) is not None and not isinstance(_get(cfg, path), str):
            raise ConfigError(where(src, f"{path} must be a file path or null, got {_get(cfg, path)!r}"))
    like = cfg["model"]["likelihood"]
    if cfg["kind"] == "decoder":
        if like not in (None, "gaussian"):
            raise ConfigError(where(src, f"model.likelihood {like!r} is for generative models; a decoder is gaussian"))
        cfg["model"]["likelihood"] = "gaussian"
    else:
        if like == "gaussian":
            raise ConfigError(where(src, "model.likelihood gaussian is for decoders; a generative model is bernoulli or poisson"))
        cfg["model"]["likelihood"] = like or "bernoulli"
        if cfg["lag_bins"] != 0:
            raise ConfigError(where(src, "lag_bins must be 0 for a generative model (zeta up to bin k predicts bin k+1)"))
    if not isinstance(cfg["model"]["glm_base"], bool):
        raise ConfigError(where(src, f"model.glm_base must be true or false, got {cfg['model']['glm_base']!r}"))
    if cfg["model"]["glm_base"]:
        if cfg["kind"] != "generative" or cfg["model"]["likelihood"] != "poisson":
            raise ConfigError(where(src, "model.glm_base adds the coupled Poisson GLM's log-rate: it needs kind generative "
                                         "and model.likelihood poisson"))
        if cfg["training"]["mode"] != "offline":
            raise ConfigError(where(src, "model.glm_base trains on precomputed GLM log-rates: it needs training.mode offline"))
    if cfg["retention"]["quantizer"] == "learned" and cfg["training"]["mode"] != "online":
        raise ConfigError(where(src, "retention.quantizer learned needs training.mode online (its zeta must be differentiable)"))
    return cfg


def use_bf16(setting: str) -> bool:
    """training.precision -> train in bfloat16 autocast? auto: only where oneDNN has bf16 kernels
    (AVX512-BF16/AMX); elsewhere bf16 would be emulated and slower than fp32."""
    if setting == "auto":
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return setting == "bf16"


def idle_cores(window_s: float = 0.3) -> float | None:
    """Cores idle now, from two reads of /proc/stat window_s apart (Linux; None elsewhere). The
    1-minute load average lags: 75 s after a 2-core job it still read 0.64 on an idle machine."""
    import os
    import time

    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)            # idle + iowait, all
    try:
        i0, t0 = read()
        time.sleep(window_s)
        i1, t1 = read()
    except (OSError, ValueError, IndexError):
        return None
    return (i1 - i0) / (t1 - t0) * (os.cpu_count() or 1) if t1 > t0 else None


def torch_threads(setting: int) -> int:
    """threads 0 (auto): the cores idle now (idle_cores; else cores minus the 1-minute load
    average), at least 1; else the setting."""
    import os

    if setting > 0:
        return int(setting)
    cores = os.cpu_count() or 1
    idle = idle_cores()
    if idle is None:
        try:
            idle = cores - os.getloadavg()[0]
        except OSError:
            return 1
    return max(1, min(cores, int(idle + 0.5)))


def canvas_for(cfg: dict, n_channels: int) -> tuple[int, int]:
    """The canvas a config gives n_channels: [H, W] as set, "fit" (rt_decoder.layout.fit_canvas,
    sides divisible by 2^(UNet levels - 1)), or None: default_canvas."""
    from rt_decoder.layout import default_canvas, fit_canvas

    r = cfg["retention"]
    c = r["canvas"]
    if c == "fit":
        m = 2 ** (len(cfg["model"]["widths"]) - 1)
        if r["layout"] in ("map", "auto") and r["map"]:
            # the electrode map's own grid, sides rounded up to the UNet's multiple
            return tuple(-(-n // m) * m for n in (len(r["map"]), len(r["map"][0])))
        return fit_canvas(n_channels, m)
    return (int(c[0]), int(c[1])) if c else default_canvas(n_channels)


def parse_references(text: str, src: str = "--baselines") -> list[str]:
    """'gru,wiener' -> ["gru", "wiener"], in the order given; unknown names are one error line."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = REFERENCES + GENERATIVE_REFERENCES
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ConfigError(f"{src}: unknown reference(s) {', '.join(bad) or repr(text)}; choose from {', '.join(known)}")
    return list(dict.fromkeys(names))


def load_config(path: str | Path | None = None) -> dict:
    """Read, merge over DEFAULTS, validate. `path` is a file or a shipped config's name
    (rt_decoder.configs.resolve; None = the default config). Relative data paths resolve against
    the config's folder when that file exists there, else against the working directory."""
    from rt_decoder.configs import resolve

    path = resolve(path)
    src = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(where(src, "no such config file")) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(where(src, f"cannot read config ({type(e).__name__})")) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(where(src, f"not valid YAML{at} ({getattr(e, 'problem', None) or type(e).__name__})")) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(where(src, f"a config is a mapping of keys, got {type(raw).__name__}"))
    cfg = validate(_merge(DEFAULTS, raw, src), src)
    cfg["_source"] = src
    def near(value: str) -> str:
        return str(path.parent / value) if value and not Path(value).is_absolute() and (path.parent / value).exists() else value

    if isinstance(cfg["data"], list):
        cfg["data"] = [near(v) for v in cfg["data"]]
    else:
        cfg["data"] = near(cfg["data"])
    cfg["training"]["init_from"] = near(cfg["training"]["init_from"])
    return cfg
