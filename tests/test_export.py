"""tools/export.py: ONNX (when onnxruntime is installed) and TorchScript exports match PyTorch."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from asap.inference.export import example_input, export, export_checked, max_difference
from asap.models.asapnet import ASAPNetGenerator
from asap.pretrained.native import make_checkpoint
from asap.utils.io import save_torch
from tests.conftest import REPO

KW = dict(label_nc=5, downsampling=8, learned_ds_factor=4, lr_width=4, lr_max_width=8, lr_depth=1, hr_width=8,
          hr_depth=2, image_size=[32, 64])


def tiny() -> ASAPNetGenerator:
    torch.manual_seed(0)
    return ASAPNetGenerator(**KW).eval()


def test_torchscript_export_matches(tmp_path):
    g = tiny()
    x = example_input(g, None, batch=2)
    assert x.shape == (2, g.spec.num_channels, 32, 64)
    path, checked = export_checked(g, x, tmp_path / "g.ts.pt", "torchscript", tolerance=1e-5)
    diff = max_difference(g, path, x, "torchscript")
    assert diff is not None and diff <= 1e-5 and checked == diff
    assert export(g, x, tmp_path / "g2.ts.pt", "torchscript") == tmp_path / "g2.ts.pt"


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
                    reason="onnx/onnxruntime not installed (optional extra [export])")
def test_onnx_export_via_tool_matches(tmp_path):
    ckpt = tmp_path / "g.pt"
    save_torch(make_checkpoint("asapnet", {"generator": (tiny(), {"_target_": "asap.models.asapnet.ASAPNetGenerator", **KW})}),
               ckpt)
    r = subprocess.run([sys.executable, str(REPO / "tools" / "export.py"), f"checkpoint={ckpt}", "format=onnx",
                        f"out={tmp_path / 'g.onnx'}"], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    assert r.returncode == 0, r.stderr
    assert "max abs difference" in r.stdout
    diff = max_difference(tiny(), tmp_path / "g.onnx", example_input(tiny(), None, batch=3), "onnx")
    assert diff <= 1e-4
