"""Shared test fixtures: paths to ../shared/fixtures (skipped with a reason when absent), small helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ASAP_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def fixture_dir(family: str) -> Path:
    """Return ../shared/fixtures/<family>, or skip the test with a reason when it is absent."""
    d = FIXTURES / family
    if not d.is_dir():
        pytest.skip(f"official fixtures not found at {d} (set ASAP_SHARED to the shared/ folder)")
    return d


REALDATA = SHARED / "realdata"


def realdata_dir(name: str) -> Path:
    """Return ../shared/realdata/<name> (small real datasets, never copied here), or skip with a reason."""
    d = REALDATA / name
    if not d.is_dir():
        pytest.skip(f"real data set not found at {d} (set ASAP_SHARED to the shared/ folder)")
    return d
