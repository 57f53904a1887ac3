"""Resumable, deterministic data loading: epoch permutations and per-sample augmentation seeds derived from
(seed, epoch, index), so a run resumed mid-epoch sees exactly the batches an uninterrupted run would."""
from __future__ import annotations

import random
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + index * 7919 + 12345) % (2 ** 31 - 1)


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
    """Batches of keys for one epoch (a seeded permutation), starting after ``skip`` batches."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, skip: int = 0, shuffle: bool = True,
                 drop_last: bool = True) -> None:
        self.n, self.batch_size, self.seed, self.epoch, self.skip = n, batch_size, seed, epoch, skip
        self.shuffle, self.drop_last = shuffle, drop_last

    def __len__(self) -> int:
        full = self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)
        return max(0, full - self.skip)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 7_919 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        nb = len(self) + self.skip
        for b in range(self.skip, nb):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield [self.epoch * self.n + i for i in idx]


class ResumableLoader:
    """Endless iterator over epochs with a position (epoch, batches consumed) that can be saved and restored."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0,
                 collate_fn: Callable | None = None, shuffle: bool = True, pin_memory: bool = False) -> None:
        if len(dataset) < batch_size:
            from asap.errors import AsapError
            raise AsapError(f"the training set has {len(dataset)} samples, fewer than batch_size={batch_size}")
        self.dataset = SeededDataset(dataset, seed)
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.collate_fn, self.shuffle, self.pin_memory = collate_fn, shuffle, pin_memory
        self.epoch, self.position = 0, 0
        self._it: Iterator | None = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._it = None

    def _start(self) -> None:
        sampler = EpochBatchSampler(len(self.dataset), self.batch_size, self.seed, self.epoch, self.position,
                                    self.shuffle)
        # a private generator: starting an iterator must not draw from the global RNG, or a run resumed mid-epoch
        # (a new iterator where the uninterrupted run had none) would diverge in everything random after it
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self._it = iter(DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers,
                                   collate_fn=self.collate_fn, pin_memory=self.pin_memory, generator=gen))

    def __iter__(self) -> "ResumableLoader":
        return self

    def __next__(self) -> Any:
        while True:
            if self._it is None:
                self._start()
            try:
                batch = next(self._it)
                self.position += 1
                return batch
            except StopIteration:
                self.epoch, self.position, self._it = self.epoch + 1, 0, None
