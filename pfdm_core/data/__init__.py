"""Data floor: datasets (`small`: no network; `images`: MNIST, CIFAR-10, Colorized MNIST, CelebA) and the
federated partitions (`partition`). Imports only `core`."""
from pfdm_core.data.partition import (
    PARTITIONS,
    client_classes,
    cluster_classes,
    cluster_partition,
    dirichlet_partition,
    iid_partition,
    partition,
)
from pfdm_core.data.small import (
    Dataset,
    default_mixture,
    digits_split,
    gaussian_mixture,
    load_digits,
    train_test_split,
    union,
)

__all__ = ["PARTITIONS", "Dataset", "client_classes", "cluster_classes", "cluster_partition", "default_mixture",
           "digits_split", "dirichlet_partition", "gaussian_mixture", "iid_partition", "load_digits", "partition",
           "train_test_split", "union"]
