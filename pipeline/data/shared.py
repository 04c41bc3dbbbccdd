"""The float32 batch a DataLoader worker fills sample by sample, in shared memory.

In a worker the batch is what the DataLoader hands to the trainer, so it is allocated in shared memory
directly (as ``default_collate`` does) and samples go in with ``pwrite`` on its file descriptor rather than
through a fresh mapping, which would cost a page fault per 4 KiB. Both need private torch APIs
(``TypedStorage._new_shared``, ``UntypedStorage._share_fd_cpu_``); where a torch version lacks them, the
public ``Tensor.share_memory_`` and plain tensor writes give the same batch, more slowly.
"""
from __future__ import annotations

import logging
import math
import os

import torch

log = logging.getLogger("ofa.pipeline.data")

#: what a missing or changed private API raises
_PRIVATE_API_ERRORS = (AttributeError, TypeError, RuntimeError, NotImplementedError)


def _private_shared(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 tensor allocated in shared memory (private API: no copy)."""
    return torch.empty(0).new(torch.empty(0)._typed_storage()._new_shared(math.prod(shape))).view(shape)


def _private_fd(tensor: torch.Tensor) -> int | None:
    """The file descriptor of a shared tensor's memory, under the ``file_descriptor`` strategy (private API)."""
    if torch.multiprocessing.get_sharing_strategy() != "file_descriptor":
        return None
    return tensor.untyped_storage()._share_fd_cpu_()[0]


def shared_tensor(shape: tuple[int, ...]) -> tuple[torch.Tensor, int | None]:
    """``(float32 tensor in shared memory, its file descriptor or None)``: through the private APIs where
    this torch has them, else through ``Tensor.share_memory_`` (one more copy, no descriptor)."""
    try:
        tensor = _private_shared(shape)
    except _PRIVATE_API_ERRORS as exc:
        log.debug("shared batch through share_memory_(): %s", exc)
        return torch.empty(shape).share_memory_(), None
    try:
        return tensor, _private_fd(tensor)
    except _PRIVATE_API_ERRORS as exc:
        log.debug("shared batch written without its descriptor: %s", exc)
        return tensor, None


class SharedBatch:
    """A float32 batch of ``shape`` filled sample by sample (``batch[i] = x``), in shared memory if ``shared``."""

    def __init__(self, shape: tuple[int, ...], shared: bool) -> None:
        if shared:
            self.tensor, self.fd = shared_tensor(shape)
        else:
            self.tensor, self.fd = torch.empty(shape), None

    def __setitem__(self, i: int, x: torch.Tensor) -> None:
        if x.shape != self.tensor.shape[1:]:
            raise ValueError(f"sample of shape {tuple(x.shape)} in a batch of {tuple(self.tensor.shape[1:])}")
        if self.fd is None:
            self.tensor[i] = x
            return
        data = memoryview(x.to(torch.float32).contiguous().numpy()).cast("B")
        offset = i * data.nbytes
        while data:
            n = os.pwrite(self.fd, data, offset)
            data, offset = data[n:], offset + n
