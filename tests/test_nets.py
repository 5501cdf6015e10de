import pytest
import torch

from pfdm_core.core.nets import MLPDenoiser, UNet, UNetConfig, count_parameters


@pytest.mark.parametrize("cfg", [UNetConfig(), UNetConfig(28, 1, 16, (1, 2), 1, (14,)),
                                 UNetConfig(32, 3, 16, (1, 2, 2), 1, (16,))])
def test_unet_shapes_and_labels(cfg):
    m = UNet(cfg)
    x = torch.randn(3, cfg.in_channels, cfg.image_size, cfg.image_size)
    t = torch.tensor([1, 500, 1000])
    y = torch.tensor([0, 1, cfg.num_classes])  # last one: null label
    assert m(x, t, y).shape == x.shape
    assert m(x, t, None).shape == x.shape


def test_paper_config_parameter_count_and_two_steps():
    """DDPM's CIFAR-10 UNet: ~35.7M parameters; two training steps run on CPU."""
    m = UNet(UNetConfig.paper())
    assert count_parameters(m) == pytest.approx(35.7e6, rel=0.01)
    opt = torch.optim.Adam(m.parameters(), 2e-4)
    x, t, y = torch.randn(2, 3, 32, 32), torch.tensor([10, 900]), torch.tensor([3, 7])
    for _ in range(2):
        loss = m(x, t, y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss)


def test_conditioning_changes_output():
    torch.manual_seed(0)
    m = UNet().eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([100, 100])
    assert not torch.allclose(m(x, t, torch.tensor([0, 0])), m(x, t, torch.tensor([5, 5])))


def test_mlp_denoiser():
    m = MLPDenoiser(dim=2, num_classes=4)
    assert m(torch.randn(7, 2), torch.randint(1, 1000, (7,)), torch.randint(0, 4, (7,))).shape == (7, 2)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 8, 8\)"):
        UNet()(torch.randn(2, 3, 8, 8), torch.ones(2, dtype=torch.long))
    with pytest.raises(ValueError, match="image_size"):
        UNetConfig(image_size=10, channel_mults=(1, 2, 2))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
        MLPDenoiser()(torch.randn(2, 3), torch.ones(2, dtype=torch.long))
