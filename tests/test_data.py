import numpy as np
import pytest
import torch

from pfdm_core.core.paths import data_root
from pfdm_core.data.partition import client_classes, cluster_partition
from pfdm_core.data.small import default_mixture, gaussian_mixture, load_digits, train_test_split


def test_digits_range_and_shape():
    d = load_digits()
    assert d.x.shape == (1797, 1, 8, 8) and d.x.dtype == torch.float32
    assert d.x.min() == -1 and d.x.max() == 1 and d.num_classes == 10


def test_cluster_partition_sizes_and_disjoint():
    d = load_digits()
    parts = cluster_partition(d.y, num_clients=4, majority_per_class=60, minority_per_class=5, seed=0)
    assert len(parts) == 4
    for m, idx in enumerate(parts):
        counts = np.bincount(d.y[idx].numpy(), minlength=10)
        maj, mino = client_classes(m, 4)
        assert (counts[maj] == 60).all() and (counts[mino] == 5).all()
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == len(allidx)  # no image held by two clients
    assert client_classes(0, 4) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])
    assert client_classes(3, 4) == ([5, 6, 7, 8, 9], [0, 1, 2, 3, 4])


def test_partition_is_seeded():
    y = load_digits().y
    a, b = cluster_partition(y, seed=1), cluster_partition(y, seed=1)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[0], cluster_partition(y, seed=2)[0])


def test_partition_errors():
    y = load_digits().y
    with pytest.raises(ValueError, match="too few images"):
        cluster_partition(y, num_clients=4, majority_per_class=100)
    with pytest.raises(ValueError, match="num_clients must be >= 2"):
        cluster_partition(y, num_clients=1)


def test_stratified_split():
    tr, te = train_test_split(load_digits(), 0.2, seed=0)
    assert len(tr) + len(te) == 1797
    ratio = np.bincount(te.y.numpy()) / np.bincount(load_digits().y.numpy())
    assert np.allclose(ratio, 0.2, atol=0.02)
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_split(load_digits(), 1.5)


def test_gaussian_mixture_moments():
    means, covs = default_mixture(3)
    d = gaussian_mixture([4000, 10, 4000], means, covs, seed=0)
    assert torch.bincount(d.y).tolist() == [4000, 10, 4000]
    x0 = d.x[d.y == 0].numpy()
    assert np.allclose(x0.mean(0), means[0], atol=0.05)
    assert np.allclose(np.cov(x0.T), covs[0], atol=0.03)


def test_data_root_order_and_missing(tmp_path, monkeypatch):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").touch()
    monkeypatch.setenv("PFDM_DATA", str(tmp_path))
    assert data_root("MNIST/raw") == tmp_path
    with pytest.raises(FileNotFoundError, match="(?s)'CIFAR/none' not found.*PFDM_DATA"):
        data_root("CIFAR/none")
