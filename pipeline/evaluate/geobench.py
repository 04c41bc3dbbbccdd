"""Read GEO-Bench as released, without the ``geobench`` package.

Layout::

    ROOT/classification_v1.0/m-eurosat/task_specs.pkl        # pickled TaskSpecifications
    ROOT/classification_v1.0/m-eurosat/band_stats.json       # {band name: {"mean", "std", ...}}
    ROOT/classification_v1.0/m-eurosat/default_partition.json  # {"train": [names], "valid": [...], "test": [...]}
    ROOT/classification_v1.0/m-eurosat/SAMPLE.hdf5           # one dataset per band + attribute "pickle"
    ROOT/segmentation_v1.0/m-cashew-plantation/...           # same; the label is the band "label"

The HDF5 attribute ``pickle`` holds ``str(pickle.dumps(d))`` where ``d`` has ``bands_order``
(dataset names in order), one attribute dict per band (``band_info``, ``date``, ...) and, for
classification, ``label``. All pickles go through :mod:`pipeline.evaluate.safe_pickle`.
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .safe_pickle import (
    Classification,
    MultiLabelClassification,
    SegmentationClasses,
    SemanticSegmentation,
    StandIn,
    safe_load_file,
    safe_loads,
)

BENCHMARKS = ("classification_v1.0", "segmentation_v1.0")
SPLITS = ("train", "valid", "test")
KINDS = ("classification", "multilabel", "segmentation")


class GeoBenchError(ValueError):
    """A GEO-Bench folder or file that cannot be read as released; the message names it."""


@dataclass(frozen=True)
class BandSpec:
    """One input band as the task describes it."""

    name: str                   # GEO-Bench band name, e.g. "04 - Red"
    sensor: str                 # GEO-Bench band class: Sentinel2, Sentinel1, Landsat8, SpectralBand, ...
    wavelength: float | None    # micrometres, when GEO-Bench records one
    alt_names: tuple[str, ...] = ()


@dataclass
class Task:
    """A GEO-Bench task folder and what its ``task_specs.pkl`` says."""

    name: str
    path: Path
    benchmark: str
    kind: str                   # one of KINDS
    n_classes: int
    class_names: list[str] | None
    bands: list[BandSpec]
    patch_size: tuple[int, int] | None = None
    spatial_resolution: float | None = None
    _stats: dict[str, tuple[float, float]] | None = field(default=None, repr=False)

    def partitions(self) -> list[str]:
        """Names of the partitions on disk (``default``, ``0.10x_train``, ...)."""
        return sorted(p.name[: -len("_partition.json")] for p in self.path.glob("*_partition.json"))

    def partition(self, name: str = "default") -> dict[str, list[str]]:
        """Sample names per split of partition ``name``."""
        path = self.path / f"{name}_partition.json"
        if not path.exists():
            raise GeoBenchError(f"{self.path}: no partition {name!r} (found: {', '.join(self.partitions()) or 'none'})")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise GeoBenchError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or any(s not in data for s in SPLITS):
            raise GeoBenchError(f"{path}: expected an object with lists 'train', 'valid' and 'test'")
        return {s: [str(n) for n in data[s]] for s in SPLITS}

    def band_stats(self) -> dict[str, tuple[float, float]]:
        """(mean, std) per band name from ``band_stats.json``."""
        if self._stats is None:
            path = self.path / "band_stats.json"
            try:
                raw = json.loads(path.read_text())
            except FileNotFoundError:
                raise GeoBenchError(f"{self.path}: band_stats.json is missing") from None
            except json.JSONDecodeError as exc:
                raise GeoBenchError(f"{path}: not valid JSON ({exc})") from None
            self._stats = {str(k): (float(v["mean"]), float(v["std"])) for k, v in raw.items()
                           if isinstance(v, dict) and "mean" in v and "std" in v}
        return self._stats

    def sample_path(self, sample_name: str) -> Path:
        return self.path / f"{sample_name}.hdf5"


@dataclass
class GeoSample:
    """One sample: band arrays by GEO-Bench band name (first date when there are several) and its label."""

    name: str
    bands: dict[str, np.ndarray]
    label: Any                  # int (classification), 0/1 vector (multi-label) or [H, W] array (segmentation)


def discover_tasks(root: str | Path) -> dict[str, Path]:
    """Task name -> folder, for every folder holding a ``task_specs.pkl`` under ``root``.

    ``root`` may be the GEO-Bench root (holding ``classification_v1.0/`` and ``segmentation_v1.0/``),
    one benchmark folder, or a single task folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise GeoBenchError(f"GEO-Bench root {root} is not a directory")
    if (root / "task_specs.pkl").exists():
        return {root.name: root}
    found: dict[str, Path] = {}
    candidates = [root / b for b in BENCHMARKS if (root / b).is_dir()] or [root]
    for bench in candidates:
        for task_dir in sorted(bench.iterdir()):
            if task_dir.is_dir() and (task_dir / "task_specs.pkl").exists() and not task_dir.name.startswith((".", "_")):
                found[task_dir.name] = task_dir
    if not found:
        raise GeoBenchError(
            f"no GEO-Bench task under {root}: expected folders with task_specs.pkl in "
            f"{' or '.join(BENCHMARKS)}"
        )
    return found


def _band_spec(info: Any, source: str) -> BandSpec:
    if not isinstance(info, StandIn):
        raise GeoBenchError(f"{source}: band entry {info!r} is not a GEO-Bench band description")
    wl = info.get("wavelength")
    return BandSpec(
        name=str(info.get("name")),
        sensor=type(info).geobench_class,
        wavelength=float(wl) if isinstance(wl, (int, float, np.floating)) else None,
        alt_names=tuple(str(a) for a in (info.get("alt_names") or ())),
    )


def load_task(path: str | Path) -> Task:
    """Read a task folder's ``task_specs.pkl`` (restricted unpickler) into a :class:`Task`."""
    path = Path(path)
    specs_path = path / "task_specs.pkl"
    if not specs_path.exists():
        raise GeoBenchError(f"{path}: task_specs.pkl is missing")
    specs = safe_load_file(specs_path)
    if not isinstance(specs, StandIn) or type(specs).geobench_class != "TaskSpecifications":
        raise GeoBenchError(f"{specs_path}: expected a TaskSpecifications, got {type(specs).__name__}")
    label_type = specs.get("label_type")
    if isinstance(label_type, MultiLabelClassification):
        kind = "multilabel"
    elif isinstance(label_type, (SegmentationClasses, SemanticSegmentation)):
        kind = "segmentation"
    elif isinstance(label_type, Classification):
        kind = "classification"
    else:
        raise GeoBenchError(f"{specs_path}: unsupported label type {type(label_type).__name__}")
    if not isinstance(label_type.get("n_classes"), (int, np.integer)):
        raise GeoBenchError(f"{specs_path}: the label type has no integer n_classes")
    n_classes = int(label_type.get("n_classes"))
    names = label_type.get("_class_names", label_type.get("class_name"))
    bands = [_band_spec(b, str(specs_path)) for b in (specs.get("bands_info") or [])]
    if not bands:
        raise GeoBenchError(f"{specs_path}: the task lists no bands")
    patch = specs.get("patch_size")
    res = specs.get("spatial_resolution")
    return Task(
        name=path.name,
        path=path,
        benchmark=path.parent.name,
        kind=kind,
        n_classes=n_classes,
        class_names=[str(n) for n in names] if names is not None else None,
        bands=bands,
        patch_size=tuple(int(p) for p in patch) if patch is not None else None,
        spatial_resolution=float(res) if res is not None else None,
    )


def _attr_pickle(raw: Any, source: str) -> dict:
    """Decode the ``pickle`` attribute: the repr of a bytes object, parsed as a literal, then unpickled."""
    if isinstance(raw, (bytes, np.bytes_)):
        raw = bytes(raw).decode("utf-8", "surrogateescape")
    if not isinstance(raw, str):
        raise GeoBenchError(f"{source}: attribute 'pickle' is a {type(raw).__name__}, expected a string")
    try:
        data = ast.literal_eval(raw)  # literals only: never evaluates code
    except (ValueError, SyntaxError) as exc:
        raise GeoBenchError(f"{source}: attribute 'pickle' is not a bytes literal ({exc})") from None
    if not isinstance(data, bytes):
        raise GeoBenchError(f"{source}: attribute 'pickle' holds a {type(data).__name__}, expected bytes")
    attrs = safe_loads(data, source=f"{source} (attribute 'pickle')")
    if not isinstance(attrs, dict):
        raise GeoBenchError(f"{source}: attribute 'pickle' does not hold a dict")
    return attrs


def read_sample(path: str | Path, with_label: bool = True) -> GeoSample:
    """Read one ``SAMPLE.hdf5``: every band by its GEO-Bench name, plus the label."""
    path = Path(path)
    if not path.exists():
        raise GeoBenchError(f"sample file {path} does not exist")
    bands: dict[str, np.ndarray] = {}
    label: Any = None
    with h5py.File(path, "r") as fp:
        attrs = _attr_pickle(fp.attrs["pickle"], str(path)) if "pickle" in fp.attrs else {}
        order = list(attrs.get("bands_order") or fp.keys())
        for key in order:
            if key not in fp:
                raise GeoBenchError(f"{path}: bands_order names {key!r} but the file has no such dataset")
            info = (attrs.get(key) or {}).get("band_info") if isinstance(attrs.get(key), dict) else None
            name = str(info.get("name")) if isinstance(info, StandIn) and info.get("name") else key
            if name == "label" or key.startswith("label"):
                if with_label:
                    label = np.asarray(fp[key][()])
                continue
            if name not in bands:  # several dates: keep the first
                bands[name] = np.asarray(fp[key][()])
    if with_label and label is None:
        if "label" not in attrs:
            raise GeoBenchError(f"{path}: no label (neither a 'label' band nor a 'label' entry in the pickle)")
        label = attrs["label"]
        label = np.asarray(label) if isinstance(label, (list, tuple, np.ndarray)) else int(label)
    return GeoSample(name=path.stem, bands=bands, label=label)
