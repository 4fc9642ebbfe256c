"""A corpus larger than memory, spread over ranks (DESIGN §10).

Memory-mapped sessions: what multi-session training reads of a recording (counts, behaviour,
quantized inputs q, zeta, zeta of 1, normalized targets, valid rows) is written once per session
to CACHE/<session>-<file sha256>-<preparation key>/ as .npy files and opened with
np.load(mmap_mode="r"). A batch gathers its rows from the maps, so the process's own (anonymous)
memory holds one batch, not the corpus; the pages read stay in the kernel's page cache, which
it reclaims under pressure. The names carry the source file's content hash and a hash of the
config keys the arrays depend on, so a changed file or config builds a new cache; building one
holds one session in memory at a time.

Session shards: with multisession.shards = N the sessions are dealt into N shards (session i in
shard i mod N), rank r of a world of W loads only shards r, r + W, ..., and a training step takes
one batch from every shard (the loss is the mean over shards). The schedule depends on N and the
seed, not on W: one process with shards N takes the same steps as N processes (or N / k
processes holding k shards each), so DDP's gradient average over ranks is the same mean.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rt_decoder.recording import Recording

CACHE_VERSION = 1
ARRAYS = ("counts", "behavior", "q", "feats", "ones", "target", "valid")
OPENED: list[str] = []          # the recordings this process read (loaded or hashed), in order


def file_digest(path: str | Path) -> str:
    """sha256 of a recording's bytes (a folder: every file under it, by relative name)."""
    path = Path(path)
    OPENED.append(str(path))
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else "").encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def prep_key(cfg: dict) -> str:
    """Hash of the config keys the cached arrays depend on."""
    r = cfg["retention"]
    keys = {"v": CACHE_VERSION, "kind": cfg["kind"], "bin_ms": cfg.get("bin_ms"), "lag_bins": cfg["lag_bins"],
            "split": cfg["split"], "decays": [float(g) for g in r["decays"]], "quantizer": r["quantizer"], "levels": r["levels"]}
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:10]


def write_cache(folder: Path, prep, ones: np.ndarray) -> None:
    """Every array as .npy plus meta.json, into a temporary folder renamed into place (a crash
    leaves no half cache; two ranks building the same one keep the first)."""
    rec = prep.rec
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arrays = {"counts": rec.counts, "behavior": rec.behavior, "q": prep.q, "feats": prep.feats, "ones": ones,
              "target": prep.target, "valid": prep.valid}
    for k, v in arrays.items():
        np.save(tmp / f"{k}.npy", np.ascontiguousarray(v))
    meta = {"bin_s": float(rec.bin_s), "behavior_names": rec.behavior_names, "channel_names": rec.channel_names,
            "behavior_units": rec.behavior_units, "source": rec.source, "fingerprint": rec.fingerprint(),
            "trial_starts": None if rec.trial_starts is None else [int(t) for t in rec.trial_starts],
            "split": {k: [int(a), int(b)] for k, (a, b) in prep.split.items()}, "canvas": list(prep.canvas),
            "pixels": [int(p) for p in prep.pixels], "decays": prep.decays, "out_mean": np.asarray(prep.out_mean).tolist(),
            "out_std": np.asarray(prep.out_std).tolist(), "nan_rows": prep.nan_rows, "layout": prep.layout}
    (tmp / "meta.json").write_text(json.dumps(meta))
    try:
        os.replace(tmp, folder)
    except OSError:                  # another process put the same cache in place first
        shutil.rmtree(tmp, ignore_errors=True)


def open_cache(folder: Path):
    """(Prepared with memory-mapped arrays, zeta of 1, data fingerprint) from a cache folder."""
    from .data import Prepared

    meta = json.loads((folder / "meta.json").read_text())
    a = {k: np.load(folder / f"{k}.npy", mmap_mode="r") for k in ARRAYS}
    ts = meta["trial_starts"]
    rec = Recording(counts=a["counts"], bin_s=meta["bin_s"], behavior=a["behavior"], behavior_names=meta["behavior_names"],
                    channel_names=meta["channel_names"], trial_starts=None if ts is None else np.asarray(ts, np.int64),
                    source=meta["source"], behavior_units=meta["behavior_units"])
    prep = Prepared(rec=rec, split={k: tuple(v) for k, v in meta["split"].items()}, canvas=tuple(meta["canvas"]),
                    pixels=np.asarray(meta["pixels"], np.int64), decays=meta["decays"], q=a["q"], feats=a["feats"],
                    target=a["target"], valid=a["valid"], out_mean=np.asarray(meta["out_mean"]),
                    out_std=np.asarray(meta["out_std"]), nan_rows=meta["nan_rows"], layout=meta["layout"])
    return prep, a["ones"], meta["fingerprint"]


def cache_folder(cache_dir: Path, name: str, path: str | Path, cfg: dict) -> Path:
    return Path(cache_dir) / f"{name}-{file_digest(path)[:16]}-{prep_key(cfg)}"


@dataclass
class ShardPlan:
    """Which sessions this rank trains on and how a step draws from the shards."""

    n_shards: int
    rank: int
    world: int
    n_sessions: int

    def shard_of(self, i: int) -> int:
        return i % self.n_shards

    def local_shards(self) -> list[int]:
        return [g for g in range(self.n_shards) if g % self.world == self.rank]

    def mine(self, i: int) -> bool:
        return self.shard_of(i) % self.world == self.rank


def check_plan(n_shards: int, world: int, n_sessions: int, src: str) -> None:
    from rt_decoder.errors import ConfigError, where

    if n_shards % world:
        raise ConfigError(where(src, f"multisession.shards {n_shards} must be a multiple of the {world} ranks"))
    if n_shards > n_sessions:
        raise ConfigError(where(src, f"multisession.shards {n_shards} is more than the {n_sessions} sessions"))


def shard_generator(seed: int, shard: int, epoch: int) -> torch.Generator:
    """A shard's random stream for one epoch: a function of (seed, shard, epoch) alone, so every
    world size and a resumed run draw the same batches."""
    h = hashlib.sha256(f"{seed}/{shard}/{epoch}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "little") >> 1)


def shard_jobs(sessions: list[tuple[int, torch.Tensor]], batch_size: int, steps: int,
               gen: torch.Generator) -> list[tuple[int, torch.Tensor]]:
    """`steps` batches (local session index, rows) of one shard: its sessions' rows shuffled and
    cut into batches, the batches shuffled, repeated until the epoch's steps are filled."""
    out: list[tuple[int, torch.Tensor]] = []
    while len(out) < steps:
        jobs = []
        for j, rows in sessions:
            order = rows[torch.randperm(len(rows), generator=gen)]
            jobs += [(j, order[i:i + batch_size]) for i in range(0, len(order), batch_size)]
        if not jobs:
            raise ValueError("a shard without training rows")
        out += [jobs[k] for k in torch.randperm(len(jobs), generator=gen).tolist()]
    return out[:steps]
