"""Cost of a network: parameters, MACs (FlopCounterMode; 1 MAC = 2 FLOPs), latency and peak memory."""
from __future__ import annotations

import statistics
import threading
import time
from typing import Callable

import torch
import torch.nn as nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(fn: Callable[[], object]) -> int:
    """Multiply-accumulates of one call, from PyTorch's FlopCounterMode (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        fn()
    return int(counter.get_total_flops()) // 2


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call (CUDA: between events, after synchronisation)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        _sync(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def latency(fn: Callable[[], object], device: torch.device, warmup: int = 2, runs: int = 5) -> list[float]:
    """Per-run seconds after ``warmup`` untimed calls, under inference_mode."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        _sync(device)
        return [time_once(fn, device) for _ in range(runs)]


def summarize(times: list[float]) -> dict[str, float]:
    ms = sorted(t * 1000 for t in times)
    q = statistics.quantiles(ms, n=4) if len(ms) >= 2 else [ms[0]] * 3
    return {"latency_ms_median": statistics.median(ms), "latency_ms_min": ms[0], "latency_ms_max": ms[-1],
            "latency_ms_iqr": q[2] - q[0]}


def _release_free_heap() -> None:
    """Give freed heap pages back to the OS (glibc malloc_trim), so that resident-set growth measures what a
    call allocates rather than what earlier calls left cached in the allocator. No-op elsewhere."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory of one call in MiB: the CUDA allocator's peak, or on CPU the resident-set growth above the
    level before the call (sampled every millisecond; Linux /proc), after returning cached free heap pages to the
    OS so that memory left over by earlier calls does not hide the call's own peak."""
    with torch.inference_mode():
        if device.type == "cuda":
            _sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            fn()
            _sync(device)
            return (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
        _release_free_heap()
        try:
            base = _rss_bytes()
        except OSError:
            return float("nan")
        peak, done = [base], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _rss_bytes())
                time.sleep(0.001)
        t = threading.Thread(target=sample, daemon=True)
        t.start()
        try:
            fn()
        finally:
            done.set()
            t.join()
        peak[0] = max(peak[0], _rss_bytes())
        return (peak[0] - base) / 2 ** 20
