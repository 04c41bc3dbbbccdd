"""Training checkpoints, written atomically to a folder or an object store.

Layout under ``OUT/checkpoints/step-NNNNNNNN/``::

    model/config.json, model/model.safetensors   # save_pretrained (loadable by from_pretrained)
    train_state.pt                               # optimiser, scheduler, RNG states, data position, step
    COMPLETE                                     # marker, written last

Under FSDP each rank's optimiser shard goes beside the folder, before the marker:
``OUT/checkpoints/step-NNNNNNNN-optimizer/rank-RRRRR.pt``.

Local folders are written under a temporary name and renamed; on object stores (no atomic rename)
the marker is written last, and only checkpoints with the marker count.
"""
from __future__ import annotations

import io
import json
import random
from typing import Any

import numpy as np
import torch

from ofa.ingest.storage import fs_options, get_fs, join
from ofa.model import save_pretrained
from ofa.model.checkpoints import MARKER, MODEL_DIR, resolve_checkpoint
from ofa.model.checkpoints import latest_checkpoint as _latest

STATE_NAME = "train_state.pt"


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states, torch.load(weights_only=True)-safe."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": json.dumps(random.getstate()),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured."""
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: str, step: int, model: torch.nn.Module, state: dict[str, Any],
                    storage_options: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None) -> str:
    """Write checkpoint ``step`` under ``out/checkpoints``; return its URL. Call on the main process only.

    ``metadata`` goes into the model's config.json (``sensors``, ``training``: see ``pipeline.provenance``)."""
    fs, root = get_fs(out, storage_options)
    final = join(root, "checkpoints", checkpoint_name(step))
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    tmp = join(root, "checkpoints", f".tmp-{checkpoint_name(step)}") if local else final
    if fs.exists(tmp):
        fs.rm(tmp, recursive=True)
    fs.makedirs(tmp, exist_ok=True)
    prefix = out.split("://", 1)[0] + "://" if "://" in out and not local else ""
    save_pretrained(model, prefix + join(tmp, MODEL_DIR), storage_options=storage_options if prefix else None,
                    metadata=metadata)
    buf = io.BytesIO()
    torch.save(state, buf)
    with fs.open(join(tmp, STATE_NAME), "wb") as f:
        f.write(buf.getvalue())
    with fs.open(join(tmp, MARKER), "wb") as f:
        f.write(json.dumps({"step": step}).encode())
    if local:
        if fs.exists(final):
            fs.rm(final, recursive=True)
        fs.mv(tmp, final, recursive=True)
    return prefix + final if prefix else final


def latest_checkpoint(out: str, storage_options: dict[str, Any] | None = None) -> tuple[int, str] | None:
    """``(step, url)`` of the last complete checkpoint under ``out``, or None."""
    return _latest(out, fs_options(out, storage_options))


def load_state(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``train_state.pt`` of a checkpoint (tensors and plain values only)."""
    fs, root = get_fs(url, storage_options)
    with fs.open(join(root, STATE_NAME), "rb") as f:
        return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)


def optimizer_shard_url(checkpoint_url: str, rank: int) -> str:
    """Where rank ``rank`` keeps its FSDP optimiser shard for the checkpoint at ``checkpoint_url``."""
    base, name = checkpoint_url.rstrip("/").rsplit("/", 1)
    return f"{base}/{name}-optimizer/rank-{rank:05d}.pt"


def save_optimizer_shard(out: str, step: int, rank: int, state: dict[str, Any],
                         storage_options: dict[str, Any] | None = None) -> None:
    """FSDP: write this rank's optimiser state next to (not inside) checkpoint ``step``; every rank calls it
    before the main process writes the checkpoint's marker."""
    fs, root = get_fs(out, storage_options)
    path = optimizer_shard_url(join(root, "checkpoints", checkpoint_name(step)), rank)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    with fs.open(path, "wb") as f:
        f.write(buf.getvalue())


def load_optimizer_shard(checkpoint_url: str, rank: int, storage_options: dict[str, Any] | None = None) -> dict:
    """The optimiser state rank ``rank`` saved with ``save_optimizer_shard``."""
    fs, path = get_fs(optimizer_shard_url(checkpoint_url, rank), storage_options)
    with fs.open(path, "rb") as f:
        return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)


def optimizer_layout_problem(state: dict[str, Any], sharded: bool, world: int) -> str | None:
    """Why a run (FSDP or not, ``world`` processes) cannot load the optimiser state of the checkpoint whose
    ``train_state`` is ``state``, or None: FSDP shards load only into FSDP over as many processes, a whole
    state only into a run that does not shard it."""
    saved_world = (state.get("data") or {}).get("world_size")
    if bool(state.get("sharded_optimizer")) != sharded:
        saved = f"sharded over {saved_world} FSDP processes" if not sharded else "whole (a run without FSDP)"
        return f"its optimiser state is {saved}; this run {'shards it (FSDP)' if sharded else 'does not use FSDP'}"
    if sharded and saved_world != world:
        return f"its optimiser state is sharded over {saved_world} FSDP processes; this run has {world}"
    return None


def model_dir(url: str, storage_options: dict[str, Any] | None = None) -> str:
    """The ``save_pretrained`` folder behind ``url``: a training run folder (its last complete
    checkpoint), a ``step-NNNNNNNN`` folder, or that folder's ``model/`` folder itself (one resolver for
    every ``--checkpoint``: ``ofa.model.checkpoints.resolve_checkpoint``)."""
    return resolve_checkpoint(url, fs_options(url, storage_options))
