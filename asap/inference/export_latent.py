"""Export graphs of latent-to-image generators: MobileStyleGAN's student synthesis network, w -> image.

As the official exporter: the fixed 'const' noise maps are baked in as constants (scaled by their learned
strength) and the auxiliary wavelet heads are left out. The style_inv demodulation is folded into the pointwise
(and the 4x4 dense) weights, so the graph computes no demodulation at run time. Input ``w`` [B, w_dim] (one style
for every layer; the mapping network, a plain MLP, is not part of the graph), output ``image`` [B, 3, S, S].
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from asap.errors import AsapError
from asap.nn.wavelets import idwt_by_adds as idwt


class FoldedMobileSynthesis(nn.Module):
    """A MobileSynthesisNetwork with its demodulation folded and its const noise baked in, for tracing."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        net = net.eval()
        self.size, self.w_dim = net.size, net.w_dim
        noise = net.const_noise()
        with torch.no_grad():
            c = net.conv1.conv
            self.register_buffer("const", net.input.input.detach().clone())
            self.conv1_mod = _linear(c.modulation, c.scale)
            self.register_buffer("conv1_w", (c.weight * c.demodulation()[:, None, None, None]).detach().clone())
            self.register_buffer("conv1_b", net.conv1.bias.detach().reshape(-1).clone())
            self.register_buffer("conv1_noise", (net.conv1.noise.weight * noise[0]).detach().clone())
            self.ups, self.mods, self.dws, self.pws, self.bs = (nn.ModuleList(), nn.ModuleList(), nn.ParameterList(),
                                                                nn.ParameterList(), nn.ParameterList())
            self.noises = nn.ParameterList()
            for i, block in enumerate(net.layers):
                self.ups.append(_linear(block.up.modulation, 1.0))
                for k, conv in enumerate((block.conv1, block.conv2)):
                    mc = conv.conv
                    self.mods.append(_linear(mc.modulation, mc.scale))
                    self.dws.append(_const(mc.weight_dw))
                    self.pws.append(_const(mc.weight_permute * mc.demodulation()[:, None, None, None]))
                    self.bs.append(_const(conv.bias.reshape(-1)))
                    self.noises.append(_const(conv.noise.weight * noise[2 * i + 1 + k]))
            head = net.layers[-1].to_img if len(net.layers) else net.to_img1
            self.head_mod = _linear(head.conv.modulation, head.conv.scale)
            self.register_buffer("head_w", head.conv.weight.detach().clone())
            self.register_buffer("head_b", head.bias.detach().reshape(-1).clone())
        self.channels = list(net.channels)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        x = self.const.expand(w.shape[0], -1, -1, -1) * self.conv1_mod(w)[:, :, None, None]
        x = F.leaky_relu(F.conv2d(x, self.conv1_w, self.conv1_b, padding=1) + self.conv1_noise, 0.2)
        for i, up in enumerate(self.ups):
            x = idwt(x * up(w)[:, :, None, None])
            for k in (2 * i, 2 * i + 1):
                x = x * self.mods[k](w)[:, :, None, None]
                x = F.conv2d(x, self.dws[k], padding=1, groups=x.shape[1])
                x = F.leaky_relu(F.conv2d(x, self.pws[k], self.bs[k]) + self.noises[k], 0.2)
        x = x * self.head_mod(w)[:, :, None, None]
        return idwt(F.conv2d(x, self.head_w, self.head_b))


def _const(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone(), requires_grad=False)


def _linear(lin: nn.Linear, scale: float) -> nn.Linear:
    """A copy of ``lin`` with its output multiplied by ``scale`` (folded into weight and bias)."""
    out = nn.Linear(lin.in_features, lin.out_features)
    out.weight.data.copy_(lin.weight.detach() * scale)
    out.bias.data.copy_(lin.bias.detach() * scale)
    return out.requires_grad_(False)


def reference_image(model: nn.Module, w: torch.Tensor) -> torch.Tensor:
    """What the export must reproduce: the generator's synthesis with its const noise, in PyTorch."""
    return model.synthesis(w, noise_mode="const")


def synthesis_for_export(model: nn.Module, batch: int = 1, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """(traceable module, example w [batch, w_dim]) for a MobileStyleGAN generator."""
    from asap.models.mobilestylegan import MobileStyleGANGenerator

    if not isinstance(model, MobileStyleGANGenerator):
        raise AsapError(f"{type(model).__name__}: latent-to-image export supports MobileStyleGAN generators")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = model.mapping(torch.randn(batch, model.z_dim, generator=gen))
    return FoldedMobileSynthesis(model.synthesis), w

