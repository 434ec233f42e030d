"""Data-parallel training under ``torchrun``: the plumbing the one training loop calls.

A run launched by ``torchrun --nproc_per_node=N`` (one or several nodes) trains one model with
:class:`~torch.nn.parallel.DistributedDataParallel`: gloo on the CPU, NCCL on CUDA. The loop asks
a :class:`World` for everything that differs from a single process:

* :meth:`World.shard`: each rank's share of every global batch (``batch_size`` stays the global
  batch: the union over ranks of step ``t``'s shares is exactly the single-process batch ``t``);
* :meth:`World.wrap`: the model to train (DDP averages the gradients of the ranks' batch means);
* :meth:`World.gather_batches`: every rank's evaluated share of each batch, back in the
  single-process order, so every rank builds the same evaluation and every schedule takes the
  same decision on every rank;
* :attr:`World.is_main`: only rank 0 writes (dvclive, checkpoint, result.json, log lines).

Without torchrun's environment (or with ``WORLD_SIZE=1``) every method does nothing or hands its
argument back: a single process runs exactly the code it ran before this module existed.

Example (what ``train_one`` does, in short)::

    world = setup(resolve_device("auto"))
    batches = world.shard(task.batches(train_set, 32, True, generator), train=True)
    ddp_model = world.wrap(model, seed)
    ...  # train on ddp_model, evaluate model: evaluate(..., world) gathers the shares
    shutdown()
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from adaptive_lr.tasks.batching import GroupedBatches


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run (a single process by default).

    Args:
        rank: global rank (torchrun's ``RANK``), 0 on the process that writes.
        size: number of processes (``WORLD_SIZE``).
        local_rank: rank on this node (``LOCAL_RANK``); picks the CUDA device.
        device: where this rank trains; collective ops on tensors use it (NCCL needs CUDA tensors).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs and writes outputs."""
        return self.rank == 0

    # data -----------------------------------------------------------------
    def shard(self, batches: Any, train: bool) -> Any:
        """This rank's share of every batch of ``batches`` (what ``Task.batches`` returned).

        Rank ``r`` of ``W`` takes positions ``r, r + W, ...`` of each global batch's indices.
        That is :class:`torch.utils.data.DistributedSampler`'s rule (rank ``r`` takes positions
        ``r, r + W, ...`` of the epoch's order) applied to one global batch at a time: when each
        rank cuts its DistributedSampler share into batches of ``B / W``, its ``t``-th batch is
        exactly the positions of global batch ``t`` with residue ``r``. Sharding the batch sampler
        instead of the dataset keeps the task's own batching (speech's length groups, which a
        DistributedSampler knows nothing about) and needs no padding by repeated samples. Every
        rank draws the same permutation: the generator is seeded alike on every rank.

        A partial batch of ``L`` samples is split as evenly as it goes (shares differ by at most
        one). For training (``train=True``) a batch smaller than ``W`` is left out, since every rank
        must take part in every step; evaluation keeps it, and a rank may then have nothing of it:
        evaluation passes are unshuffled, so that can only be the last batch, which is what
        :func:`merge_batches` expects.

        Args:
            batches: a :class:`torch.utils.data.DataLoader` built on a batch size, or a
                :class:`~adaptive_lr.tasks.batching.GroupedBatches` (``groups()``, the index lists
                of one pass, with ``dataset``, ``collate`` and ``batch_size``), like
                :class:`~adaptive_lr.tasks.batching.LengthGroupedBatches`.
            train: whether the batches feed optimisation steps (see above).

        Raises:
            ValueError: the global batch size is not a multiple of the number of processes.
            TypeError: ``batches`` is of neither kind.
        """
        if self.size == 1:
            return batches
        loader = isinstance(batches, torch.utils.data.DataLoader)
        if not loader and not isinstance(batches, GroupedBatches):
            raise TypeError(
                f"cannot shard {type(batches).__name__}: Task.batches must return a DataLoader or an object "
                "with groups(), dataset, collate and batch_size (a GroupedBatches, like LengthGroupedBatches)"
            )
        batch_size = batches.batch_size
        if not batch_size or batch_size % self.size:
            raise ValueError(
                f"batch_size = {batch_size}: it is the global batch, split evenly across processes, "
                f"so it must be a multiple of the {self.size} processes"
            )
        n = len(batches.dataset)
        rest = 0 if getattr(batches, "drop_last", False) else n % batch_size
        steps = n // batch_size + (1 if rest and (rest >= self.size or not train) else 0)
        if not loader:
            return _ShardedGroups(batches, self.rank, self.size, train, steps)
        sampler = _ShardedBatchSampler(batches.batch_sampler, self.rank, self.size, train, steps)
        # the same generator as the original: the DataLoader draws its base seed from it before the
        # sampler draws the permutation, as in a single process
        return torch.utils.data.DataLoader(
            batches.dataset,
            batch_sampler=sampler,
            collate_fn=batches.collate_fn,
            num_workers=batches.num_workers,
            pin_memory=batches.pin_memory,
            generator=batches.generator,
        )

    # model ------------------------------------------------------------------
    def wrap(self, model: torch.nn.Module, seed: int) -> torch.nn.Module:
        """The module to train: ``model`` itself in one process, else DDP around it.

        DDP broadcasts rank 0's weights and buffers, then averages the gradients: each rank's loss
        is the mean over its share, so with equal shares the update is the single-process one on
        the global batch (an uneven last batch weighs its smaller shares' samples a little more).
        BatchNorm statistics are per rank (DDP broadcasts rank 0's buffers before every forward).
        Evaluate ``model``, not the wrapper. Each rank then draws dropout and augmentation from its
        own stream (``seed``, ``rank``): with one stream, the shares of one batch would get the same
        masks and the same random renderings.
        """
        if self.size == 1:
            return model
        rank_seed = int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0])
        random.seed(rank_seed)
        np.random.seed(rank_seed)
        torch.manual_seed(rank_seed)
        # find_unused_parameters: a task's model may skip parameters at random (wav2vec2's
        # layerdrop in the full profile), and differently on each rank
        ids = [self.device.index] if self.device.type == "cuda" else None
        return _DDP(model, device_ids=ids, find_unused_parameters=True)

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics), so all ranks evaluate one model."""
        if self.size == 1:
            return
        for buf in model.buffers():
            dist.broadcast(buf, src=0)

    # collectives ------------------------------------------------------------
    def gather_batches(self, outs: list) -> list:
        """Every rank's evaluated share of each batch, merged back into whole batches.

        Args:
            outs: this rank's :class:`~adaptive_lr.tasks.base.EvalBatch` of each of its batches,
                in order (from :meth:`shard` with ``train=False``).

        Returns:
            One ``EvalBatch`` per global batch, its samples in the single-process order; the same
            list on every rank.
        """
        if self.size == 1:
            return outs
        return merge_batches(self.all_gather(outs))

    def all_gather(self, value: Any) -> list:
        """``value`` of every rank, in rank order (``[value]`` in one process); any picklable value."""
        if self.size == 1:
            return [value]
        out: list = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def all_true(self, flag: Any) -> bool:
        """Whether ``flag`` holds on every rank (e.g. a finite training loss)."""
        if self.size == 1:
            return bool(flag)
        t = torch.tensor(1.0 if bool(flag) else 0.0, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item() > 0)

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks (``value`` itself in one process)."""
        if self.size == 1:
            return value
        t = torch.tensor(float(value), dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.item() / self.size

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.size > 1:
            dist.barrier()


SINGLE = World()


class NullLive:
    """What ranks other than 0 log to instead of a ``dvclive.Live``: the same calls, no files."""

    step = 0

    def log_metric(self, name: str, value: Any) -> None:
        """Discard one metric value."""

    def next_step(self) -> None:
        """Nothing to flush."""

    def end(self) -> None:
        """Nothing to close."""


class _DDP(torch.nn.parallel.DistributedDataParallel):
    """DDP that hands attribute reads on to the wrapped model: tasks read ``model.config`` and the like."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":
                raise
            return getattr(self.module, name)


def _share(indices: Sequence[int], rank: int, size: int) -> list:
    return list(indices[rank::size])


class _ShardedBatchSampler:
    """One rank's share of each index list of a batch sampler (see :meth:`World.shard`)."""

    def __init__(self, inner, rank: int, size: int, train: bool, steps: int):
        self.inner, self.rank, self.size, self.train, self.steps = inner, rank, size, train, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list]:
        for indices in self.inner:
            if self.train and len(indices) < self.size:
                continue  # the last batch, too small to give every rank a sample
            share = _share(indices, self.rank, self.size)
            if share:
                yield share


class _ShardedGroups:
    """One rank's share of each group of a :class:`GroupedBatches` (speech's length groups); itself one."""

    def __init__(self, batches: GroupedBatches, rank: int, size: int, train: bool, steps: int):
        self.batches, self.rank, self.size, self.train, self.steps = batches, rank, size, train, steps
        self.dataset, self.batch_size, self.collate = batches.dataset, batches.batch_size, batches.collate

    def __len__(self) -> int:
        return self.steps

    def groups(self) -> list[list[int]]:
        """This rank's shares of the index groups of one pass (draws like the wrapped source)."""
        out = []
        for group in self.batches.groups():
            if self.train and len(group) < self.size:
                continue
            share = _share(group, self.rank, self.size)
            if share:
                out.append(share)
        return out

    def __iter__(self) -> Iterator[Any]:
        for share in self.groups():
            yield self.collate([self.dataset[i] for i in share])


def merge_batches(per_rank: list[list]) -> list:
    """Interleave the ranks' shares of each evaluated batch back into whole batches.

    ``per_rank[r][t]`` is rank ``r``'s ``EvalBatch`` for global batch ``t`` (positions ``r, r + W,
    ...`` of it); a rank whose share of the last batch was empty has one entry fewer.
    """
    from adaptive_lr.tasks.base import EvalBatch

    size = len(per_rank)
    merged = []
    for t in range(max(len(outs) for outs in per_rank)):
        shares = [outs[t] if t < len(outs) else EvalBatch([]) for outs in per_rank]
        parts = {}
        for name in ("losses", "predictions", "references"):
            whole: list = [None] * sum(len(getattr(s, name)) for s in shares)
            for r, s in enumerate(shares):
                whole[r::size] = getattr(s, name)
            parts[name] = whole
        merged.append(EvalBatch(**parts))
    return merged


# --------------------------------------------------------------------------- process group


def world_from_env(env: dict | None = None) -> World:
    """The world torchrun describes in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
    env = os.environ if env is None else env
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def is_main() -> bool:
    """Whether this process is rank 0 of its run (always, without torchrun); no process group needed."""
    return world_from_env().is_main


def setup(device: torch.device) -> World:
    """Join the run's process group if torchrun started several processes; return this rank's world.

    gloo on the CPU, NCCL on CUDA, where each rank takes the GPU ``cuda:LOCAL_RANK``. Safe to call
    once per training run: the group is created on the first call and kept until :func:`shutdown`.
    """
    env = world_from_env()
    if env.size == 1:
        return World(device=device)
    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if dist.get_world_size() != env.size:
        raise RuntimeError(f"process group of {dist.get_world_size()} processes, but WORLD_SIZE={env.size}")
    return World(env.rank, env.size, env.local_rank, device)


def shutdown() -> None:
    """Leave the process group (nothing to do in a single process).

    No barrier: after an error on one rank the others would wait forever, and torchrun already
    waits for every rank before it returns.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------- launch


def needs_launch(nproc: int, env: dict | None = None) -> bool:
    """Whether a stage asked for ``nproc`` processes must start them (it is not inside torchrun yet)."""
    env = os.environ if env is None else env
    return nproc > 1 and "RANK" not in env


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run`` of ``argv`` on this machine with ``nproc`` processes.

    ``--standalone`` picks a free local port, so concurrent runs (a DVC queue) do not collide.
    Several machines: run torchrun on each yourself (README, "Several processes").
    """
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *argv]


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``argv`` (a script and its arguments) through torchrun; return its exit code."""
    return subprocess.call(torchrun_command(nproc, argv))


__all__ = [
    "World",
    "SINGLE",
    "NullLive",
    "setup",
    "shutdown",
    "world_from_env",
    "is_main",
    "merge_batches",
    "needs_launch",
    "torchrun_command",
    "launch",
]
