"""The paper's 3D U-Net: layer structure, Glorot initialisation, shapes."""

import math

import pytest
import torch
from torch import nn

from amtlib.segmentation.model import ModelConfig, UNet3D, count_parameters, glorot_init_, layer_table


def _expected_params(base: int, blocks: int, levels: int = 4) -> int:
    """Independent count: 3x3x3 (de)convs with bias, BN (2/channel), 2x2x2 up-deconvs, 1x1x1 head."""
    w = [base * 2**i for i in range(levels)]
    conv = lambda cin, cout, k: cin * cout * k**3 + cout  # noqa: E731
    total, cin = 0, 1
    for c in w:
        for b in range(blocks):
            total += conv(cin if b == 0 else c, c, 3) + 2 * c
        cin = c
    for lo, hi in zip(w[:0:-1], w[-2::-1]):
        total += conv(lo, hi, 2) + 2 * hi
        for b in range(blocks):
            total += conv(2 * hi if b == 0 else hi, hi, 3) + 2 * hi
    return total + w[0] + 1


@pytest.mark.parametrize("base,blocks", [(4, 1), (8, 2)])
def test_parameter_count_matches_hand_count(base, blocks):
    assert count_parameters(UNet3D(ModelConfig(base_width=base, blocks_per_level=blocks))) == _expected_params(base, blocks)


def test_layer_structure_four_levels_conv_bn_relu_pool_deconv():
    m = UNet3D(ModelConfig(base_width=4, blocks_per_level=2))
    assert len(m.encoder) == 4 and len(m.decoder) == 3 and len(m.up) == 3
    assert isinstance(m.pool, nn.MaxPool3d) and m.pool.kernel_size == 2
    for level, stack in enumerate(m.encoder):
        assert len(stack) == 2
        for block in stack:
            conv, bn, act = block.conv, block.adn.N, block.adn.A
            assert type(conv) is nn.Conv3d and isinstance(bn, nn.BatchNorm3d) and isinstance(act, nn.ReLU)
            assert conv.out_channels == 4 * 2**level
            assert [n for n, _ in block.adn.named_children()] == ["N", "A"]  # BN before ReLU
    for stack in m.decoder:
        for block in stack:
            assert type(block.conv) is nn.ConvTranspose3d and block.conv.stride == (1, 1, 1)
    for up in m.up:
        assert type(up.conv) is nn.ConvTranspose3d and up.conv.stride == (2, 2, 2)
    assert m.head.out_channels == 1
    kinds = layer_table(m)["kind"].value_counts()
    assert kinds["conv3d"] == 8 + 1 and kinds["deconv3d"] == 3 + 6


def test_glorot_uniform_bounds_and_zero_biases():
    torch.manual_seed(0)
    m = UNet3D(ModelConfig(base_width=8, blocks_per_level=1))
    n_layers = 0
    for mod in m.modules():
        if isinstance(mod, (nn.Conv3d, nn.ConvTranspose3d)):
            w = mod.weight.detach()
            k = math.prod(w.shape[2:])
            bound = math.sqrt(6.0 / ((w.shape[0] + w.shape[1]) * k))
            assert w.abs().max() <= bound + 1e-7
            if w.numel() > 5000:  # uniform on [-b, b]: sd b/sqrt(3), extremes reach the bound
                assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
                assert w.abs().max() > 0.98 * bound
            assert torch.count_nonzero(mod.bias) == 0
            n_layers += 1
        if isinstance(mod, nn.BatchNorm3d):
            assert torch.all(mod.weight == 1) and torch.all(mod.bias == 0)
    assert n_layers == 4 + 3 + 3 + 1


def test_glorot_init_resets_a_perturbed_model():
    m = UNet3D(ModelConfig(base_width=2, blocks_per_level=1))
    with torch.no_grad():
        m.head.bias.fill_(5.0)
    glorot_init_(m)
    assert m.head.bias.item() == 0.0


def test_output_shape_and_divisibility_error():
    m = UNet3D(ModelConfig(base_width=2, blocks_per_level=1)).eval()
    with torch.no_grad():
        assert m(torch.zeros(2, 1, 8, 16, 24)).shape == (2, 1, 8, 16, 24)
        with pytest.raises(ValueError, match="divisible by 8"):
            m(torch.zeros(1, 1, 8, 12, 16))


def test_config_round_trip_and_invalid():
    cfg = ModelConfig(base_width=8, blocks_per_level=1)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    for bad in (dict(levels=1), dict(base_width=0), dict(blocks_per_level=0)):
        with pytest.raises(ValueError, match=r"invalid model configuration .*need levels >= 2, base_width >= 1, blocks_per_level >= 1"):
            UNet3D(ModelConfig(**bad))
    UNet3D(ModelConfig(levels=2, base_width=1, blocks_per_level=1))  # the smallest valid one builds
