"""Run folders: ``OUT/config.yaml`` (the resolved options) beside ``log.jsonl``, checked on resume.

``--resume auto`` into a folder whose ``config.yaml`` (or, for runs older than it, whose last
checkpoint) differs in an option that shapes the model or the data stops with one line naming the
differences (``RunConflictError``) instead of failing deep inside ``load_state_dict``.

Logs are written locally (``OUT`` itself, or ``--log-dir``; for an ``s3://`` OUT by default
``ofa-logs/<bucket>/<prefix>``, one folder per run) and, when that is not OUT, copied to
``OUT/log.jsonl`` and ``OUT/tensorboard/`` at every checkpoint and at the end.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

import yaml

from ofa.ingest.storage import get_fs, join, storage_access
from ofa.model import load_config

log = logging.getLogger("ofa.train")

CONFIG_NAME = "config.yaml"
LOG_NAME = "log.jsonl"
#: options that shape the model or the data: a run folder's checkpoints only fit a run that agrees on them
IDENTITY_KEYS = ("size", "embedding", "patch_size", "img_size", "data")
#: options never written to config.yaml (may hold credentials)
PRIVATE_KEYS = ("storage_options",)


class RunConflictError(ValueError):
    """``--out`` holds a run whose model or data options differ from this one's."""


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def log_dir(cfg: Any) -> Path:
    """The local folder for ``log.jsonl`` and TensorBoard: ``--log-dir``, OUT, or one per remote OUT."""
    if cfg.log_dir:
        return Path(cfg.log_dir)
    if is_remote(cfg.out):
        scheme, _, rest = cfg.out.partition("://")
        return Path("ofa-logs") / scheme / re.sub(r"[^A-Za-z0-9._/-]", "_", rest.strip("/"))
    return Path(cfg.out.removeprefix("file://"))


def run_options(cfg: Any) -> dict[str, Any]:
    """The options as ``config.yaml`` records them (no storage options: they may hold secrets)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in PRIVATE_KEYS}


def _identity(options: dict[str, Any]) -> dict[str, Any]:
    out = {k: options.get(k) for k in IDENTITY_KEYS}
    out["data"] = [str(u).rstrip("/") for u in out["data"] or []]
    return out


def read_run_config(cfg: Any) -> dict[str, Any] | None:
    """``OUT/config.yaml`` as a dict, or None when the folder has none."""
    fs, root = get_fs(cfg.out, cfg.storage_options)
    path = join(root, CONFIG_NAME)
    with storage_access(cfg.out, "--out"):
        if not fs.exists(path):
            return None
        text = fs.cat_file(path).decode()
    doc = yaml.safe_load(text)
    return doc if isinstance(doc, dict) else None


def write_run_config(cfg: Any) -> None:
    """Write ``OUT/config.yaml``: usable as ``ofa train --config OUT/config.yaml`` to rerun the run."""
    text = ("# ofa train options of this run, resolved (flags > --config file > defaults); storage options left out\n"
            + yaml.safe_dump(run_options(cfg), sort_keys=False))
    fs, root = get_fs(cfg.out, cfg.storage_options)
    with storage_access(cfg.out, "--out"):
        fs.makedirs(root, exist_ok=True)
        fs.pipe_file(join(root, CONFIG_NAME), text.encode())


def differences(saved: dict[str, Any], current: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """``"key saved (this run: current)"`` for each of ``keys`` whose values differ."""
    return [f"{k} {saved.get(k)!r} (this run: {current.get(k)!r})" for k in keys if saved.get(k) != current.get(k)]


def check_resume(cfg: Any, checkpoint_model_dir: str | None) -> None:
    """Raise ``RunConflictError`` if OUT holds a run this one cannot continue; log the other changed options."""
    saved = read_run_config(cfg)
    current = run_options(cfg)
    if saved is not None:
        diff = differences(_identity(saved), _identity(current), IDENTITY_KEYS)
        others = [k for k in current if k not in IDENTITY_KEYS and k in saved]
        changed = differences(saved, current, tuple(others))
        if changed and not diff:
            log.info("resuming %s with changed options: %s", cfg.out, "; ".join(changed))
    elif checkpoint_model_dir is not None:  # a run from before config.yaml: its checkpoint's model config
        mcfg = load_config(checkpoint_model_dir, cfg.storage_options)
        keys = ("size", "embedding", "patch_size", "img_size")
        diff = differences({k: getattr(mcfg, k) for k in keys}, current, keys)
    else:
        return
    if diff:
        raise RunConflictError(f"--out {cfg.out} holds a run with other options: {'; '.join(diff)}; continue it with "
                               f"the same options, or give this run another --out")


def fetch_log(cfg: Any, local: Path) -> None:
    """When OUT keeps a copy of the log that the local folder lacks (resuming elsewhere), bring it back."""
    if (local / LOG_NAME).exists() or local.resolve() == log_dir_of_out(cfg):
        return
    fs, root = get_fs(cfg.out, cfg.storage_options)
    remote = join(root, LOG_NAME)
    with storage_access(cfg.out, "--out"):
        if fs.exists(remote):
            local.mkdir(parents=True, exist_ok=True)
            (local / LOG_NAME).write_bytes(fs.cat_file(remote))


def log_dir_of_out(cfg: Any) -> Path | None:
    """OUT as a resolved local folder, or None when it is remote."""
    return None if is_remote(cfg.out) else Path(cfg.out.removeprefix("file://")).resolve()


def sync_logs(cfg: Any, local: Path) -> None:
    """Copy the local log folder (``log.jsonl``, TensorBoard, plots) to OUT (nothing to do when it is OUT)."""
    if local.resolve() == log_dir_of_out(cfg):
        return
    fs, root = get_fs(cfg.out, cfg.storage_options)
    with storage_access(cfg.out, "--out"):
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            target = join(root, path.relative_to(local).as_posix())
            fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(path), target)
