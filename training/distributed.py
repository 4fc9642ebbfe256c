"""Data-parallel multi-session training on PyTorch DDP, launched by torchrun (DESIGN §10).

    torchrun --nproc-per-node 2 -m training.train --config configs/multisession.yaml --data A B C --out DIR
    # several machines: on each node (node-rank 0..N-1), the same command with
    torchrun --nnodes 2 --node-rank K --nproc-per-node 2 --rdzv-backend c10d \\
             --rdzv-endpoint HOST0:29500 -m training.train --config ... --data ... --out DIR

gloo on CPU, NCCL when CUDA is present. multisession.shards N shards the data instead: rank r
loads only its sessions and a step takes one batch from every shard (training/corpus.py).
Otherwise (shards 0) every global batch (one session's rows) is split across
the ranks (rank r takes rows r, r + world, ...), so P processes with batch B take the same steps as
one process with batch B: DDP averages the gradients of equal shards. Decisions that must agree
(the time limit) are agreed collectively; the learning-rate schedule is step-based under DDP (a
wall-clock schedule would differ between ranks). Rank 0 alone writes checkpoints, exports and
metrics; `--resume` restarts every rank from rank 0's last epoch checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's share of a global batch."""
        return rows[self.rank::self.world] if self.active else rows

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any (a stop every rank must take together)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank (metadata, small summaries)."""
        if not self.active:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Elementwise sum over ranks (each rank fills its own sessions' slots, zeros elsewhere)."""
        if self.active:
            t = t.clone()
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


_CURRENT = Dist()


def current() -> Dist:
    return _CURRENT


def init() -> Dist:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1), else a
    single process."""
    global _CURRENT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        _CURRENT = Dist(dist.get_rank(), dist.get_world_size())
    return _CURRENT


def shutdown() -> None:
    global _CURRENT
    if dist.is_initialized():
        dist.destroy_process_group()
    _CURRENT = Dist()


def wrap(module: torch.nn.Module) -> torch.nn.Module:
    """DDP around the training step when distributed (sessions not in a batch leave their read-ins
    unused, hence find_unused_parameters)."""
    if not _CURRENT.active:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, find_unused_parameters=True)
