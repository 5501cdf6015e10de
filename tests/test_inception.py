"""Inception FID plumbing (pfdm_core.inception) with tiny TorchScript stand-ins for the 87 MB network.

The real FID Inception is not needed: the tests check path resolution, preprocessing, shapes,
errors and that torchmetrics' FID behaves (about 0 for a set with itself, large for different sets).
"""
import pytest
import torch
from torch import nn

from pfdm_core.evaluation import inception
from pfdm_core.evaluation.inception import (
    InceptionFeatures,
    available,
    inception_fid,
    inception_path,
)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning")  # TorchScript is the format


class _Tiny(nn.Module):
    """A small random conv net: (N, 3, 299, 299) -> (N, 2048, 1, 1), like the Inception pool3."""

    def __init__(self, dim: int = 2048) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 7, stride=8)
        self.fc = nn.Linear(8 * 16, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4).flatten(1)
        return torch.relu(self.fc(h))[:, :, None, None]


class _Probe(nn.Module):
    """Reports what the network receives: feature 0 = input mean, feature 1 = input width."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        width = torch.full((n, 1), float(x.shape[-1]))
        return torch.cat([x.mean((1, 2, 3))[:, None], width, torch.zeros(n, 2046)], 1)


def _save(module: nn.Module, path) -> str:
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(module), str(path))
    return str(path)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    torch.manual_seed(0)
    path = _save(_Tiny().eval(), tmp_path / "tiny.pt")
    monkeypatch.setenv("PFDM_INCEPTION", path)
    return path


def _images(n, seed, brightness=0.0, channels=3, size=16):
    g = torch.Generator().manual_seed(seed)
    return (0.5 * torch.randn(n, channels, size, size, generator=g) + brightness).clamp(-1, 1)


# ----------------------------------------------------------------------------- paths
def test_unset_means_unavailable(monkeypatch):
    monkeypatch.delenv("PFDM_INCEPTION", raising=False)
    assert inception_path() is None and not available()
    with pytest.raises(FileNotFoundError, match="PFDM_INCEPTION"):
        InceptionFeatures()


def test_missing_file_names_the_variable_and_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PFDM_INCEPTION", str(tmp_path / "nope.pt"))
    with pytest.raises(FileNotFoundError, match="PFDM_INCEPTION") as e:
        available()
    assert "nope.pt" in str(e.value) and "TorchScript" in str(e.value)
    with pytest.raises(FileNotFoundError, match="other.pt"):
        inception_path(tmp_path / "other.pt")


def test_parameter_overrides_environment(tiny, tmp_path):
    other = _save(_Probe(), tmp_path / "probe.pt")
    assert available() and inception_path() == inception_path(tiny)
    assert str(inception_path(other)) == other


# ----------------------------------------------------------------------------- features
def test_feature_shape_and_grey_equals_rgb(tiny):
    net = InceptionFeatures()
    x = _images(5, 0, channels=1, size=28)
    f = net(x)
    assert f.shape == (5, inception.InceptionFeatures.num_features) == (5, 2048)
    torch.testing.assert_close(f, net(x.repeat(1, 3, 1, 1)))
    assert not net.train().training  # stays frozen inside a metric


def test_preprocessing_matches_torchmetrics_default(tmp_path):
    """[-1, 1] -> 0..255 -> 299x299 -> (x - 128) / 128: black is -1, white 127/128 (TF's range)."""
    net = InceptionFeatures(_save(_Probe(), tmp_path / "probe.pt"))
    x = torch.cat([-torch.ones(1, 3, 8, 8), torch.ones(1, 3, 8, 8), torch.full((1, 3, 8, 8), 5.0)])
    f = net(x)
    torch.testing.assert_close(f[:, 0], torch.tensor([-1.0, 127 / 128, 127 / 128]))  # out of range is clipped
    assert (f[:, 1] == 299).all()
    grey = torch.full((1, 3, 8, 8), 2 * 100.3 / 255 - 1)  # quantised to level 100
    torch.testing.assert_close(net(grey)[0, 0], torch.tensor((100 - 128) / 128))


def test_bad_inputs_raise(tiny, tmp_path):
    net = InceptionFeatures()
    with pytest.raises(ValueError, match="shape"):
        net(torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        net(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        net(torch.full((2, 3, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="at least 2"):
        inception_fid(_images(1, 0), _images(4, 1))
    wrong = InceptionFeatures(_save(_Tiny(dim=1000).eval(), tmp_path / "wrong.pt"))
    with pytest.raises(ValueError, match="1000-d"):
        wrong(_images(2, 0))


# ----------------------------------------------------------------------------- FID
def test_fid_self_near_zero_and_different_sets_far(tiny):
    net = InceptionFeatures()
    real, same, other = _images(24, 0), _images(24, 1), _images(24, 2, brightness=0.8)
    d_self = inception_fid(real, real, batch_size=10, net=net)
    d_same = inception_fid(real, same, net=net)
    d_other = inception_fid(real, other, path=tiny)
    assert abs(d_self) < 1e-3 * d_other
    assert 0 < d_same < d_other
