"""Where a model is, given what a user points ``--checkpoint`` at: the one resolver behind ``ofa embed``,
``ofa eval``, ``ofa model info`` and ``ofa model export``.

Training writes ``OUT/checkpoints/step-NNNNNNNN/{model/, train_state.pt, COMPLETE}`` (``pipeline.checkpoint``);
``save_pretrained`` writes a folder with ``config.json`` + ``model.safetensors``. Accepted, local or any
fsspec URL (``s3://``): that folder itself, a ``step-NNNNNNNN`` folder (its ``model/``), or a run folder
(the ``model/`` of its last complete checkpoint). Imports no torch.
"""
from __future__ import annotations

import re
from typing import Any

import fsspec

CONFIG_NAME = "config.json"
MARKER = "COMPLETE"
MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"
STEP_RE = re.compile(r"(?:^|/)step-(\d{8})$")  # not ".tmp-step-..." (a local write not yet renamed)


def _fs(url: str, storage_options: dict[str, Any] | None) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, root.rstrip("/")


def _prefix(url: str, fs: fsspec.AbstractFileSystem) -> str:
    """What to put before a path ``fs`` lists to make a URL again: ``s3://`` and the like; nothing for local."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return url.split("://", 1)[0] + "://" if "://" in url and "file" not in protocols else ""


def latest_checkpoint(out: str, storage_options: dict[str, Any] | None = None) -> tuple[int, str] | None:
    """``(step, url)`` of the last complete checkpoint under the run folder ``out``, or None."""
    fs, root = _fs(out, storage_options)
    base = f"{root}/{CHECKPOINTS_DIR}"
    if not fs.exists(base):
        return None
    found = []
    for path in fs.ls(base, detail=False):
        m = STEP_RE.search(path.rstrip("/"))
        if m and fs.exists(f"{path.rstrip('/')}/{MARKER}"):
            found.append((int(m.group(1)), path.rstrip("/")))
    if not found:
        return None
    step, path = max(found)
    return step, _prefix(out, fs) + path


def resolve_checkpoint(url: str, storage_options: dict[str, Any] | None = None) -> str:
    """The ``save_pretrained`` folder behind ``url`` (see the module doc); ``CheckpointError`` if none."""
    from .errors import CheckpointError

    fs, root = _fs(url, storage_options)
    if fs.exists(f"{root}/{CONFIG_NAME}"):
        return url.rstrip("/")
    if fs.exists(f"{root}/{MODEL_DIR}/{CONFIG_NAME}"):
        return f"{url.rstrip('/')}/{MODEL_DIR}"
    found = latest_checkpoint(url, storage_options)
    if found:
        return f"{found[1]}/{MODEL_DIR}"
    raise CheckpointError(f"{url}: no checkpoint here: no {CONFIG_NAME}, no {MODEL_DIR}/{CONFIG_NAME} and no complete "
                          f"{CHECKPOINTS_DIR}/step-NNNNNNNN (expected a saved model folder, a training run folder, "
                          f"a step-NNNNNNNN folder or its {MODEL_DIR}/ folder)")
