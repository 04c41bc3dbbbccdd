"""Pickle payloads are never run: a checkpoint carrying one (as weights or as train state) and a
GEO-Bench metadata file carrying one are refused with a clear error, and the payload's side effect
(creating a marker file) never happens."""
from __future__ import annotations

import builtins
import io
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ofa.model import ModelConfig, from_pretrained, save_pretrained
from ofa.model.io import CheckpointError


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file proves code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def _evil_torch_file(path: Path, marker: Path) -> None:
    buf = io.BytesIO()
    torch.save({"weights": torch.zeros(2), "payload": _Payload(marker)}, buf)
    path.write_bytes(buf.getvalue())


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    from ofa.model import MaskedAutoencoder

    out = tmp_path_factory.mktemp("model") / "m"
    cfg = ModelConfig(size="tiny", img_size=16, patch_size=4, modalities={"naip": 4})
    save_pretrained(MaskedAutoencoder(cfg), str(out))
    return out


def test_pickled_weights_are_refused(tiny_model_dir, tmp_path):
    marker = tmp_path / "RAN"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_bytes((tiny_model_dir / "config.json").read_bytes())
    _evil_torch_file(bad / "model.safetensors", marker)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        from_pretrained(str(bad))
    assert not marker.exists()


def test_pickled_train_state_is_refused_on_resume(tiny_model_dir, tmp_path):
    from ofa.pipeline.checkpoint import MARKER, STATE_NAME, latest_checkpoint, load_state

    marker = tmp_path / "RAN"
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000002"
    (ckpt / "model").mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (ckpt / "model" / name).write_bytes((tiny_model_dir / name).read_bytes())
    _evil_torch_file(ckpt / STATE_NAME, marker)
    (ckpt / MARKER).write_text('{"step": 2}')
    step, url = latest_checkpoint(str(tmp_path / "run"))
    assert step == 2
    with pytest.raises(pickle.UnpicklingError) as info:
        load_state(url)
    assert "weights_only" in str(info.value) or "Unsupported global" in str(info.value)
    assert not marker.exists()


def test_geobench_pickle_payload_is_refused(tmp_path):
    from ofa.pipeline.evaluate.safe_pickle import UnsafePickleError, safe_load_file, safe_loads

    marker = tmp_path / "RAN"
    path = tmp_path / "task_specs.pkl"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(UnsafePickleError) as info:
        safe_load_file(path)
    assert "task_specs.pkl" in str(info.value) and "open" in str(info.value)
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(pickle.UnpicklingError):
            safe_loads(pickle.dumps(_Payload(marker), protocol=protocol), source="x.hdf5")
    assert not marker.exists()


def test_eval_cli_refuses_a_malicious_geobench_task(tmp_path):
    """``ofa eval geobench`` on a task folder whose task_specs.pkl carries a payload: clear error, no run."""
    marker = tmp_path / "RAN"
    task = tmp_path / "geobench" / "classification_v1.0" / "m-eurosat"
    task.mkdir(parents=True)
    (task / "task_specs.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    done = subprocess.run([sys.executable, "-m", "ofa.pipeline.cli", "eval", "geobench", "--root", str(tmp_path / "geobench"),
                           "--list"], capture_output=True, text=True, timeout=120)
    assert not marker.exists()
    text = done.stdout + done.stderr
    assert done.returncode == 3 and "Traceback" not in text, text[-2000:]
    assert "task_specs.pkl: refusing to unpickle global" in done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_safe_loads_reads_plain_data_of_every_protocol(protocol):
    """The restricted unpickler still reads what GEO-Bench metadata holds: bytes (protocols 0-2 write
    them through _codecs.encode), strings, numbers, containers and numpy arrays."""
    import numpy as np

    from ofa.pipeline.evaluate.safe_pickle import safe_loads

    data = {"raw": b"\x00\xffbytes", "name": "b01", "n": 3, "f": 0.5, "t": (1, 2), "l": [None, True],
            "a": np.arange(6, dtype=np.uint16).reshape(2, 3)}
    back = safe_loads(pickle.dumps(data, protocol=protocol), source="meta.pkl")
    assert back["raw"] == data["raw"] and isinstance(back["raw"], bytes)
    assert {k: v for k, v in back.items() if k != "a"} == {k: v for k, v in data.items() if k != "a"}
    np.testing.assert_array_equal(back["a"], data["a"])
