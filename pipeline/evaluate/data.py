"""A GEO-Bench split as a torch ``Dataset``: normalised native-size inputs per model group + label."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from .bands import InputGroup, sample_tensors
from .geobench import Task, read_sample


class TaskSplit(Dataset):
    """Samples ``names`` of ``task``: ``(list of [C_g, H, W] tensors, label)``; HDF5 read on access."""

    def __init__(self, task: Task, names: list[str], groups: list[InputGroup]) -> None:
        self.task, self.names, self.groups = task, list(names), groups
        self.stats = task.band_stats()

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        sample = read_sample(self.task.sample_path(self.names[i]))
        xs = sample_tensors(sample, self.groups, self.stats)
        if self.task.kind == "multilabel":
            y = torch.as_tensor(sample.label, dtype=torch.float32).reshape(-1)
        elif self.task.kind == "segmentation":
            y = torch.as_tensor(sample.label.astype("int64")).reshape(sample.label.shape[-2:])
        else:
            y = torch.as_tensor(int(sample.label), dtype=torch.long)
        return xs, y


def collate(batch: list[tuple[list[torch.Tensor], torch.Tensor]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Stack per group and the labels."""
    n_groups = len(batch[0][0])
    xs = [torch.stack([b[0][g] for b in batch]) for g in range(n_groups)]
    return xs, torch.stack([b[1] for b in batch])


def loader(split: TaskSplit, batch_size: int, shuffle: bool = False, num_workers: int = 0, seed: int = 0) -> DataLoader:
    """A ``DataLoader`` over a split; shuffling is seeded."""
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(split, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      collate_fn=collate, generator=gen, persistent_workers=False)
