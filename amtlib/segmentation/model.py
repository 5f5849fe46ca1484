"""The paper's 3D U-Net (paper: "Deep neural network architecture", Fig. 3; "Training settings").

Four resolution levels in the encoder and in the decoder, joined by skip connections. An encoder block
is conv3d-BN-ReLU and levels are separated by 2x max pooling; a decoder level upsamples with a stride-2
transposed conv3d-BN-ReLU, concatenates the skip, then applies transposed conv3d-BN-ReLU blocks
(stride 1, so the spatial size is kept). A final 1x1x1 convolution gives one logit channel (tumour vs
background). Weights are Glorot-uniform and biases zero, as the paper states.

The paper does not give the width or the number of blocks per level; both are parameters
(``base_width`` channels at the top level, doubled at each level below; ``blocks_per_level``). Built from
MONAI's :class:`monai.networks.blocks.Convolution` (conv/deconv + norm + activation).

Inputs are (N, 1, z, y, x) tensors whose spatial sizes are divisible by ``2 ** (levels - 1)``; the
sliding-window inference pads whole volumes to the training patch, which satisfies this.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from monai.networks.blocks import Convolution
from torch import nn

_NORM = "BATCH"
_ACT = "RELU"


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters that define the network's structure (stored in every checkpoint).

    ``base_width``: channels at the top level (level l has ``base_width * 2**l``); ``blocks_per_level``:
    conv (encoder) or deconv (decoder) blocks per level; ``levels``: resolution levels (the paper: 4).
    """

    base_width: int = 32
    blocks_per_level: int = 2
    levels: int = 4
    in_channels: int = 1
    out_channels: int = 1

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        return cls(**{k: int(d[k]) for k in cls.__dataclass_fields__})

    @property
    def divisor(self) -> int:
        """Spatial sizes must be multiples of this (one halving per pooling)."""
        return 2 ** (self.levels - 1)


def _block(cin: int, cout: int, transposed: bool = False) -> Convolution:
    """3x3x3 conv (or stride-1 transposed conv) followed by batch norm and ReLU."""
    return Convolution(
        spatial_dims=3,
        in_channels=cin,
        out_channels=cout,
        kernel_size=3,
        strides=1,
        adn_ordering="NA",
        act=_ACT,
        norm=_NORM,
        is_transposed=transposed,
        padding=1,
        output_padding=0 if transposed else None,
    )


def _stack(cin: int, cout: int, n: int, transposed: bool) -> nn.Sequential:
    return nn.Sequential(*[_block(cin if i == 0 else cout, cout, transposed) for i in range(n)])


class UNet3D(nn.Module):
    """Four-level 3D U-Net of the paper (see module docstring); returns logits (N, 1, z, y, x)."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config or ModelConfig()
        if cfg.levels < 2 or cfg.base_width < 1 or cfg.blocks_per_level < 1:
            raise ValueError(f"invalid model configuration {cfg}; need levels >= 2, base_width >= 1, blocks_per_level >= 1")
        self.config = cfg
        widths = [cfg.base_width * 2**i for i in range(cfg.levels)]
        self.encoder = nn.ModuleList()
        cin = cfg.in_channels
        for w in widths:
            self.encoder.append(_stack(cin, w, cfg.blocks_per_level, transposed=False))
            cin = w
        self.pool = nn.MaxPool3d(kernel_size=2, stride=2)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for lo, hi in zip(reversed(widths[1:]), reversed(widths[:-1])):
            self.up.append(
                Convolution(3, lo, hi, strides=2, kernel_size=2, adn_ordering="NA", act=_ACT, norm=_NORM,
                            is_transposed=True, padding=0, output_padding=0)
            )
            self.decoder.append(_stack(2 * hi, hi, cfg.blocks_per_level, transposed=True))
        self.head = nn.Conv3d(widths[0], cfg.out_channels, kernel_size=1)
        glorot_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.config.divisor
        if any(s % d for s in x.shape[2:]):
            raise ValueError(f"input spatial shape {tuple(x.shape[2:])} must be divisible by {d}; pad the volume")
        skips = []
        for i, enc in enumerate(self.encoder):
            x = enc(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.decoder):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


def glorot_init_(model: nn.Module) -> nn.Module:
    """Glorot-uniform weights and zero biases for every (transposed) conv; BN keeps weight 1, bias 0.

    Paper: "Training settings". Uses :func:`torch.nn.init.xavier_uniform_`, whose fan computation for a
    transposed conv swaps in/out channels consistently with its weight layout; modifies in place.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def layer_table(model: UNet3D) -> "Any":
    """One row per conv/deconv/pool layer: path, kind, channels in/out, kernel, stride (for the notebook)."""
    import pandas as pd

    rows = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            kind = "deconv3d" if isinstance(m, nn.ConvTranspose3d) else "conv3d"
            rows.append({"layer": name, "kind": kind, "in": m.in_channels, "out": m.out_channels,
                         "kernel": m.kernel_size[0], "stride": m.stride[0], "params": sum(p.numel() for p in m.parameters())})
        elif isinstance(m, nn.BatchNorm3d):
            rows.append({"layer": name, "kind": "batchnorm", "in": m.num_features, "out": m.num_features,
                         "kernel": 0, "stride": 0, "params": sum(p.numel() for p in m.parameters())})
        elif isinstance(m, nn.MaxPool3d):
            rows.append({"layer": name, "kind": "maxpool", "in": 0, "out": 0, "kernel": 2, "stride": 2, "params": 0})
    return pd.DataFrame(rows)
