"""The reusable training parts on their own: EMA (half-life with ramp-up, plain decay), the ADA probability
controller, the lazy-regularisation correction, precision parsing, keyed randomness and the time budget parser."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from asap.errors import AsapError
from asap.nn.augment import AdaptiveAugment
from asap.training.ada import AdaController
from asap.training.ema import EMA
from asap.training.lazy import correct_optimizer, lazy_ratio
from asap.training.phase import Phase, StepContext
from asap.training.precision import Precision, parse_precision
from asap.training.trainer import parse_duration


# -- EMA -----------------------------------------------------------------------------------------------------------
def test_ema_half_life_in_images():
    src, dst = nn.Linear(2, 2), nn.Linear(2, 2)
    ema = EMA(src, dst, half_life_kimg=10.0, ref_batch=32)
    assert ema.beta(0, 16) == pytest.approx(0.5 ** (32 / 10_000))          # rosinality: 32 images per step
    ema = EMA(src, dst, half_life_kimg=10.0)
    assert ema.beta(5, 16) == pytest.approx(0.5 ** (16 / 10_000))          # the real batch
    # after 10k images the old weights count one half: (beta per step) ** (steps of 10k images) = 0.5
    assert ema.beta(0, 50) ** (10_000 / 50) == pytest.approx(0.5)


def test_ema_rampup_caps_the_half_life_early():
    ema = EMA(nn.Linear(1, 1), nn.Linear(1, 1), half_life_kimg=10.0, rampup=0.05)
    # step 0 with batch 8: 8 images seen, half-life min(10000, 8 * 0.05) = 0.4 images
    assert ema.beta(0, 8) == pytest.approx(0.5 ** (8 / 0.4))
    assert ema.beta(99, 8) == pytest.approx(0.5 ** (8 / (800 * 0.05)))
    assert ema.beta(10 ** 6, 8) == pytest.approx(0.5 ** (8 / 10_000))       # capped by the configured half-life


def test_ema_update_values_and_buffers():
    src, dst = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        src.weight.fill_(1.0)
        dst.weight.fill_(0.0)
        src.running_mean.fill_(3.0)
    EMA(src, dst, decay=0.9).update(0, 4)
    assert torch.allclose(dst.weight, torch.full((2,), 0.1))              # 0.9 * 0 + 0.1 * 1
    assert torch.equal(dst.running_mean, torch.zeros(2))                  # parameters only by default
    EMA(src, dst, decay=0.9, copy_buffers=True).update(1, 4)
    assert torch.allclose(dst.weight, torch.full((2,), 0.19))
    assert torch.equal(dst.running_mean, torch.full((2,), 3.0))
    assert not any(p.requires_grad for p in dst.parameters())


@pytest.mark.parametrize("kw,match", [(dict(), "exactly one"), (dict(decay=0.9, half_life_kimg=1.0), "exactly one"),
                                      (dict(decay=1.0), "decay"), (dict(half_life_kimg=0.0), "half_life"),
                                      (dict(half_life_kimg=1.0, rampup=0.0), "rampup")])
def test_ema_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        EMA(nn.Linear(1, 1), nn.Linear(1, 1), **kw)


# -- ADA controller ------------------------------------------------------------------------------------------------
def _drive(ada: AdaController, sign: float, batch: int = 8) -> list:
    out = []
    for _ in range(ada.interval):
        ada.accumulate(torch.full((batch, 1), sign * 2.5))
        out.append(ada.update(batch))
    return out


def test_ada_moves_p_by_the_exact_step():
    aug = AdaptiveAugment(p=0.5)
    ada = AdaController(aug, target=0.6, interval=4, speed_kimg=0.5)
    assert math.isnan(ada.rt)
    step = 8 * 4 / (0.5 * 1000)
    rts = _drive(ada, +1.0)
    assert rts[:-1] == [None] * 3 and rts[-1] == pytest.approx(1.0)
    assert aug.probability == pytest.approx(0.5 + step, abs=1e-6)
    _drive(ada, -1.0)
    _drive(ada, -1.0)
    assert ada.rt == pytest.approx(-1.0)
    assert aug.probability == pytest.approx(0.5 - step, abs=1e-6)


def test_ada_p_is_clamped_and_fixed_when_not_adaptive():
    up = AdaController(AdaptiveAugment(p=0.99), interval=1, speed_kimg=0.001)
    _drive(up, +1.0)
    assert up.p == 1.0
    down = AdaController(AdaptiveAugment(p=0.01), interval=1, speed_kimg=0.001)
    _drive(down, -1.0)
    assert down.p == 0.0
    fixed = AdaController(AdaptiveAugment(p=0.3), interval=2, adaptive=False, speed_kimg=0.001)
    assert _drive(fixed, +1.0)[-1] == pytest.approx(1.0)  # r_t is still measured for logging
    assert fixed.p == pytest.approx(0.3)
    assert AdaController(AdaptiveAugment(), interval=2).update(8) is None  # nothing accumulated


def test_ada_state_round_trip():
    ada = AdaController(AdaptiveAugment(p=0.2), interval=3, speed_kimg=0.1)
    _drive(ada, +1.0)
    ada.accumulate(torch.ones(4, 1))  # half-way through the next interval
    ada.update(4)
    fresh = AdaController(AdaptiveAugment(), interval=3, speed_kimg=0.1)
    fresh.load_state_dict(ada.state_dict())
    assert fresh.state_dict() == ada.state_dict() and fresh.p > 0.2
    for c in (ada, fresh):
        c.accumulate(-torch.ones(4, 1))
        c.update(4)
        c.update(4)
    assert fresh.state_dict() == ada.state_dict()


@pytest.mark.parametrize("kw,name", [(dict(target=0.0), "target"), (dict(target=1.0), "target"),
                                     (dict(interval=0), "interval"), (dict(speed_kimg=0.0), "speed_kimg")])
def test_ada_bad_arguments(kw, name):
    with pytest.raises(ValueError, match=name):
        AdaController(AdaptiveAugment(), **kw)


# -- lazy regularisation -------------------------------------------------------------------------------------------
def test_lazy_correction_matches_the_paper_and_applies_once():
    assert lazy_ratio(16) == pytest.approx(16 / 17) and lazy_ratio(0) == 1.0
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=0.002, betas=(0.0, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    correct_optimizer(opt, 4, [sched])
    correct_optimizer(opt, 4, [sched])  # idempotent
    c = 4 / 5
    assert opt.param_groups[0]["lr"] == pytest.approx(0.002 * c)
    assert opt.param_groups[0]["betas"] == pytest.approx((0.0, 0.99 ** c))
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.002 * c)  # the scheduler keeps the corrected base lr


# -- phases, randomness, precision, time ---------------------------------------------------------------------------
def test_phase_validation():
    with pytest.raises(ValueError, match="interval"):
        Phase("G", interval=0)
    with pytest.raises(ValueError, match="networks and its optimizer"):
        Phase("G", lambda b, c: 0, networks=())
    assert Phase("Dreg", lambda b, c: 0, networks=["d"], optimizer="D", interval=4).active(8)


def test_keyed_randomness_is_independent_of_how_the_batch_is_split():
    whole = StepContext(step=3, phase="G", seed=1, positions=torch.arange(4), batch_size=4)
    a = StepContext(step=3, phase="G", seed=1, positions=torch.arange(0, 2), batch_size=4, micro=0)
    b = StepContext(step=3, phase="G", seed=1, positions=torch.arange(2, 4), batch_size=4, micro=1)
    assert torch.equal(whole.randn(5), torch.cat([a.randn(5), b.randn(5)]))
    assert not torch.equal(whole.randn(5), whole.randn(5, stream="other"))
    other_step = StepContext(step=4, phase="G", seed=1, positions=torch.arange(4), batch_size=4)
    assert not torch.allclose(whole.randn(5), other_step.randn(5))
    assert float(torch.rand((), generator=a.generator("mix"))) == float(torch.rand((), generator=b.generator("mix")))
    assert whole.randn(3).shape == (4, 3) and 0 <= float(whole.rand(2).min()) and float(whole.rand(2).max()) < 1


def test_precision_values():
    assert parse_precision(32) == "32" and parse_precision("bf16-mixed") == "bf16"
    assert parse_precision("16-mixed") == "16-mixed"
    with pytest.raises(AsapError, match="expected 32, bf16 or 16-mixed"):
        parse_precision("fp8")
    with pytest.raises(AsapError, match="16-mixed needs a CUDA device.*bf16 on CPU"):
        Precision("16-mixed", torch.device("cpu"))
    p = Precision("bf16", torch.device("cpu"))
    with p.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with p.autocast(enabled=False):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_max_time_parsing():
    assert parse_duration(None) is None
    assert parse_duration(90) == 90.0
    assert parse_duration("00:12:30") == 750.0
    assert parse_duration("01:00:00:00") == 86400.0
    for bad in ("12 minutes", "1:2", -5, 0):
        with pytest.raises(AsapError, match="trainer.max_time"):
            parse_duration(bad)
