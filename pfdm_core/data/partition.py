"""Federated partitions of a labelled dataset: index arrays, one per client.

* `cluster_partition`: the paper's heterogeneous split. Clients form two clusters; cluster A's
  majority classes are 0..K/2-1 and its minority classes the rest, cluster B the reverse. Each
  client draws `majority_per_class` images of each majority class and `minority_per_class` of
  each minority class, without replacement and without overlap between clients.
* `iid_partition` and `dirichlet_partition` (Hsu et al. 2019, arXiv 1909.06335); `partition`
  picks one by name.
"""
from __future__ import annotations

import numpy as np
import torch

PARTITIONS = ("iid", "dirichlet", "cluster")


def cluster_classes(num_classes: int = 10) -> tuple[list[int], list[int]]:
    """(majority classes of cluster A, majority classes of cluster B): 0..K/2-1 and the rest."""
    half = num_classes // 2
    return list(range(half)), list(range(half, num_classes))


def cluster_partition(
    labels: torch.Tensor | np.ndarray,
    num_clients: int = 4,
    majority_per_class: int = 60,
    minority_per_class: int = 5,
    seed: int = 0,
) -> list[np.ndarray]:
    """Index arrays, one per client, of the PFDM paper's two-cluster majority/minority split.

    Clients 0..ceil(M/2)-1 form cluster A, the rest cluster B.
    """
    labels = np.asarray(labels)
    if num_clients < 2:
        raise ValueError(f"num_clients must be >= 2 (two clusters), got {num_clients}")
    if majority_per_class < 1 or minority_per_class < 0:
        raise ValueError(
            f"need majority_per_class >= 1 and minority_per_class >= 0, got {majority_per_class}, {minority_per_class}"
        )
    classes = np.unique(labels)
    maj_a, _ = cluster_classes(len(classes))
    n_a = (num_clients + 1) // 2
    rng = np.random.default_rng(seed)
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in classes}
    parts = []
    for m in range(num_clients):
        in_a = m < n_a
        idx = []
        for c in classes:
            n = majority_per_class if (c in maj_a) == in_a else minority_per_class
            if len(pools[c]) < n:
                raise ValueError(
                    f"class {c} has too few images for this partition: client {m} needs {n}, "
                    f"{len(pools[c])} left; lower majority_per_class/minority_per_class or num_clients"
                )
            idx += [pools[c].pop() for _ in range(n)]
        parts.append(np.sort(np.array(idx, dtype=np.int64)))
    return parts


def client_classes(client: int, num_clients: int = 4, num_classes: int = 10) -> tuple[list[int], list[int]]:
    """(majority, minority) classes of a client in `cluster_partition`."""
    a, b = cluster_classes(num_classes)
    return (a, b) if client < (num_clients + 1) // 2 else (b, a)


def iid_partition(n: int, num_clients: int, seed: int = 0) -> list[np.ndarray]:
    """A random split of range(n) into num_clients parts whose sizes differ by at most 1."""
    if num_clients < 1 or n < num_clients:
        raise ValueError(f"need 1 <= num_clients <= n, got num_clients={num_clients}, n={n}")
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(p) for p in np.array_split(perm, num_clients)]


def dirichlet_partition(labels: torch.Tensor | np.ndarray, num_clients: int, alpha: float, seed: int = 0,
                        min_size: int = 1, max_tries: int = 100) -> list[np.ndarray]:
    """Non-IID split: client m holds a fraction p_cm ~ Dir(alpha 1_M) of class c (Hsu et al. 2019).

    Small alpha: few classes per client; large alpha: close to IID. Redrawn (up to max_tries)
    until every client holds at least min_size examples."""
    if not alpha > 0:
        raise ValueError(f"dirichlet alpha must be > 0, got {alpha}")
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    _, y = np.unique(np.asarray(labels), return_inverse=True)  # classes -> 0..K-1
    n, K = len(y), int(y.max()) + 1
    counts = np.bincount(y, minlength=K)
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        P = rng.dirichlet(np.full(num_clients, alpha), size=K)  # (K, M): class c's shares
        order = np.lexsort((rng.random(n), y))  # by class, random within the class
        rank = np.empty(n)
        rank[order] = np.arange(n) - (np.cumsum(counts) - counts)[y[order]]  # position within the class
        u = (rank + 0.5) / counts[y]  # (n,) in (0, 1)
        client = np.minimum((u[:, None] > np.cumsum(P, 1)[y]).sum(1), num_clients - 1)  # (n,)
        sizes = np.bincount(client, minlength=num_clients)
        if sizes.min() >= min_size:
            return [np.flatnonzero(client == m) for m in range(num_clients)]
    raise ValueError(f"no Dirichlet(alpha={alpha}) draw in {max_tries} tries gave every client >= {min_size} "
                     "examples; raise alpha or lower num_clients/min_size")


def partition(labels: torch.Tensor | np.ndarray, kind: str = "iid", num_clients: int = 4, seed: int = 0,
              dirichlet_alpha: float = 0.5, **cluster_kw) -> list[np.ndarray]:
    """Index arrays, one per client: "iid", "dirichlet" (dirichlet_alpha) or "cluster"."""
    if kind == "iid":
        return iid_partition(len(labels), num_clients, seed)
    if kind == "dirichlet":
        return dirichlet_partition(labels, num_clients, dirichlet_alpha, seed)
    if kind == "cluster":
        return cluster_partition(labels, num_clients, seed=seed, **cluster_kw)
    raise ValueError(f"partition kind must be one of {PARTITIONS}, got {kind!r}")
