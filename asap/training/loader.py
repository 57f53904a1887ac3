"""Resumable, deterministic data loading: epoch permutations and per-sample augmentation seeds derived from
(seed, epoch, index) with numpy's SeedSequence, so a run resumed mid-epoch sees exactly the batches an
uninterrupted run would, and N processes each loading their slice of the global batch see exactly the samples
(with the same crops and flips) one process loading the whole batch would."""
from __future__ import annotations

import random
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


_SAMPLE, _PERMUTATION, _LOADER = 0, 1, 2  # independent streams of one run's seed


def derive_seed(*entropy: int) -> int:
    """A 32-bit seed from non-negative integers (numpy SeedSequence: nearby inputs give unrelated seeds)."""
    return int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1)[0])


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return derive_seed(seed, _SAMPLE, epoch, index)


class SeededDataset(Dataset):
    """Wraps a dataset; key ``epoch * n + i`` returns item ``i`` with all RNGs seeded from (seed, epoch, i)."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.n = len(dataset)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: int) -> Any:
        epoch, index = divmod(int(key), self.n)
        s = _sample_seed(self.seed, epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(s)
            np.random.seed(s)
            torch.manual_seed(s)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


class EpochBatchSampler(Sampler):
    """Batches of keys for one epoch (a seeded permutation), starting after ``skip`` batches.

    ``batch_size`` is the global batch; with ``world_size`` > 1 this process yields slice ``rank`` of each.
    """

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, skip: int = 0, shuffle: bool = True,
                 drop_last: bool = True, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.batch_size, self.seed, self.epoch, self.skip = n, batch_size, seed, epoch, skip
        self.shuffle, self.drop_last = shuffle, drop_last
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        full = self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)
        return max(0, full - self.skip)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, _PERMUTATION, self.epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        nb = len(self) + self.skip
        for b in range(self.skip, nb):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            per = -(-len(idx) // self.world_size)
            idx = idx[self.rank * per:(self.rank + 1) * per]
            yield [self.epoch * self.n + i for i in idx]


class ResumableLoader:
    """Endless iterator over epochs with a position (epoch, batches consumed) that can be saved and restored.

    ``batch_size`` is the global batch; process ``rank`` of ``world_size`` loads its slice of every batch.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0,
                 collate_fn: Callable | None = None, shuffle: bool = True, pin_memory: bool = False,
                 rank: int = 0, world_size: int = 1) -> None:
        if len(dataset) < batch_size:
            from asap.errors import AsapError
            raise AsapError(f"the training set has {len(dataset)} samples, fewer than batch_size={batch_size}")
        self.dataset = SeededDataset(dataset, seed)
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.collate_fn, self.shuffle, self.pin_memory = collate_fn, shuffle, pin_memory
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0
        self._it: Iterator | None = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        # checkpoints written before one DataLoader spanned epochs may hold the end of an epoch as
        # (epoch, batches_per_epoch): the same place as (epoch + 1, 0), the only form counted here
        done, self.position = divmod(int(state["position"]), self.batches_per_epoch)
        self.epoch = int(state["epoch"]) + done
        self._it = None

    def _start(self) -> None:
        # one DataLoader over every epoch from the current position: its workers start once, and prefetch across
        # epoch boundaries (a small set would otherwise pay the worker start and first decode every few steps)
        sampler = _EndlessBatchSampler(len(self.dataset), self.batch_size, self.seed, self.epoch, self.position,
                                       self.shuffle, rank=self.rank, world_size=self.world_size)
        # a private generator: starting an iterator must not draw from the global RNG, or a run resumed mid-epoch
        # (a new iterator where the uninterrupted run had none) would diverge in everything random after it
        gen = torch.Generator().manual_seed(derive_seed(self.seed, _LOADER, self.epoch, self.rank))
        self._it = iter(DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers,
                                   collate_fn=self.collate_fn, pin_memory=self.pin_memory, generator=gen))

    def __iter__(self) -> "ResumableLoader":
        return self

    def __next__(self) -> Any:
        if self._it is None:
            self._start()
        batch = next(self._it)
        self.position += 1
        if self.position == self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        return batch

    @property
    def batches_per_epoch(self) -> int:
        return len(self.dataset) // self.batch_size


class _EndlessBatchSampler(Sampler):
    """EpochBatchSampler's batches for epoch ``epoch`` (after ``skip`` batches), then every later epoch."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, skip: int, shuffle: bool, rank: int,
                 world_size: int) -> None:
        self.args = (n, batch_size, seed)
        self.epoch, self.skip, self.shuffle, self.rank, self.world_size = epoch, skip, shuffle, rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        epoch, skip = self.epoch, self.skip
        while True:
            yield from EpochBatchSampler(*self.args, epoch, skip, self.shuffle, rank=self.rank,
                                         world_size=self.world_size)
            epoch, skip = epoch + 1, 0


class IndexLoader:
    """For families that sample their own inputs (no dataset): step after step, the global positions of this
    process's samples, ``{"index": LongTensor[b]}`` with ``index = step * batch_size + position``."""

    def __init__(self, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.position = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": 0, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = int(state["position"])

    def __iter__(self) -> "IndexLoader":
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        per = self.batch_size // self.world_size
        start = self.position * self.batch_size + self.rank * per
        self.position += 1
        return {"index": torch.arange(start, start + per)}
