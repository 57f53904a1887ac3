"""ResumableLoader: one DataLoader spans epochs (workers start once), positions resume exactly, N processes
each load their slice of the global batch."""
from __future__ import annotations

import os

import torch
from torch.utils.data import Dataset

from asap.training.loader import EpochBatchSampler, ResumableLoader


class Indexed(Dataset):
    """Item i is (i, a random draw, the worker's pid): shows which sample, its seeded RNG, and which process."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.tensor([i, torch.randint(0, 1 << 30, ()).item(), os.getpid()])


def take(loader: ResumableLoader, k: int) -> list[torch.Tensor]:
    return [next(loader) for _ in range(k)]


def test_epochs_positions_and_resume_with_a_worker():
    n, batch = 7, 2                      # 3 batches per epoch, the odd sample dropped
    loader = ResumableLoader(Indexed(n), batch, seed=5, num_workers=1)
    batches = take(loader, 8)            # epochs 0 and 1, then 2 batches of epoch 2
    assert loader.state_dict() == {"epoch": 2, "position": 2}
    expected = [k for e in range(3) for k in EpochBatchSampler(n, batch, 5, e)][:8]
    assert [b[:, 0].tolist() for b in batches] == [[k % n for k in ks] for ks in expected]
    # every sample of a run came from one worker process, started once (not once per epoch)
    assert len({int(p) for b in batches for p in b[:, 2]}) == 1
    assert int(batches[0][0, 2]) != os.getpid()
    # resuming mid-epoch (and at an epoch boundary) continues with exactly the same samples and random draws
    for stop in (2, 3, 5):
        first = ResumableLoader(Indexed(n), batch, seed=5, num_workers=0)
        take(first, stop)
        again = ResumableLoader(Indexed(n), batch, seed=5, num_workers=0)
        again.load_state_dict(first.state_dict())
        for ours, ref in zip(take(again, 8 - stop), batches[stop:], strict=True):
            assert torch.equal(ours[:, :2], ref[:, :2])


def test_state_at_the_end_of_an_epoch_in_the_older_form_resumes_in_step():
    """Older checkpoints recorded a finished epoch as (epoch, batches_per_epoch); it resumes as (epoch + 1, 0)."""
    n, batch = 7, 2
    ref = ResumableLoader(Indexed(n), batch, seed=5)
    expected = take(ref, 6)
    old = ResumableLoader(Indexed(n), batch, seed=5)
    old.load_state_dict({"epoch": 0, "position": 3})
    assert old.state_dict() == {"epoch": 1, "position": 0}
    for ours, want in zip(take(old, 3), expected[3:], strict=True):
        assert torch.equal(ours[:, :2], want[:, :2])
    assert old.state_dict() == {"epoch": 2, "position": 0}


def test_processes_load_slices_of_the_global_batch():
    n, batch = 8, 4
    whole = take(ResumableLoader(Indexed(n), batch, seed=1), 4)
    parts = [take(ResumableLoader(Indexed(n), batch, seed=1, rank=r, world_size=2), 4) for r in (0, 1)]
    for k in range(4):
        assert torch.equal(torch.cat([parts[0][k], parts[1][k]])[:, :2], whole[k][:, :2])
