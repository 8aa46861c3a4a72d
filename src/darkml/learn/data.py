"""Datasets and loaders over in-memory arrays (read once from a zarr store)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["ArrayDataset", "make_loader", "split_indices"]


class ArrayDataset(Dataset):
    """``(x[i], y[i])`` pairs from arrays, with an optional per-sample ``transform(x, generator)``.

    Transforms get a ``torch.Generator`` seeded from ``(seed, epoch, index)`` so augmentation
    is reproducible; call :meth:`set_epoch` each epoch to change the draws.
    """

    def __init__(self, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor | None = None,
                 transform: Callable | None = None, seed: int = 0):
        self.x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        self.y = None if y is None else torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
        if self.y is not None and len(self.y) != len(self.x):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)}")
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        x = self.x[i]
        if self.transform is not None:
            g = torch.Generator().manual_seed(hash((self.seed, self.epoch, int(i))) & 0x7FFFFFFFFFFFFFFF)
            x = self.transform(x, g)
        return x if self.y is None else (x, self.y[i])


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0,
                drop_last: bool = False) -> DataLoader:
    """A DataLoader whose shuffling order comes from an explicit seed."""
    g = torch.Generator().manual_seed(int(seed))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=g, num_workers=num_workers,
                      drop_last=drop_last, persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available())


def split_indices(n: int, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Shuffle ``range(n)`` with ``seed`` and cut it into consecutive parts of the given fractions."""
    if abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions {fractions} must sum to 1")
    perm = np.random.default_rng(seed).permutation(n)
    edges = np.round(np.cumsum((0,) + tuple(fractions)) * n).astype(int)
    return [np.sort(perm[a:b]) for a, b in zip(edges[:-1], edges[1:])]
