"""Write a small GEO-Bench in exactly the released layout, for the evaluation tests.

The pickles are written by classes registered under GEO-Bench's own module names
(``geobench.dataset``, ``geobench.label``, ``geobench.task``), so the bytes on disk name the
same globals as the released files; the HDF5 ``pickle`` attribute is ``str(pickle.dumps(...))``
as GEO-Bench writes it. Labels are a learnable function of the pixels:

- ``m-toy-s2`` (classification, 4 classes, Sentinel-2 13 bands, dated band names): each class
  brightens its own group of bands.
- ``m-toy-multilabel`` (multi-label, 5 labels, Sentinel-2 12 bands as m-bigearthnet): each active
  label brightens its own band.
- ``m-toy-seg`` (segmentation, 2 classes, aerial RGB): class 1 is a red rectangle on green.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import pickle
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

S2_13 = [("01 - Coastal aerosol", ("1", "01"), 60, 0.443), ("02 - Blue", ("2", "02", "blue"), 10, 0.49),
         ("03 - Green", ("3", "03", "green"), 10, 0.56), ("04 - Red", ("4", "04", "red"), 10, 0.665),
         ("05 - Vegetation Red Edge", ("5", "05"), 20, 0.705), ("06 - Vegetation Red Edge", ("6", "06"), 20, 0.74),
         ("07 - Vegetation Red Edge", ("7", "07"), 20, 0.783), ("08 - NIR", ("8", "08", "NIR"), 10, 0.842),
         ("08A - Vegetation Red Edge", ("8A", "08A"), 20, 0.865), ("09 - Water vapour", ("9", "09"), 60, 0.945),
         ("10 - SWIR - Cirrus", ("10",), 60, 1.375), ("11 - SWIR", ("11",), 20, 1.61), ("12 - SWIR", ("12",), 20, 2.19)]

SPLIT_SIZES = {"train": 64, "valid": 24, "test": 40}


@contextlib.contextmanager
def geobench_classes() -> Iterator[types.SimpleNamespace]:
    """Temporarily register minimal look-alikes of GEO-Bench's classes under its module names."""

    def cls(module: str, name: str, bases: tuple = (object,), init: Any = None) -> type:
        ns = {"__module__": module, "__qualname__": name}
        if init is not None:
            ns["__init__"] = init
        return type(name, bases, ns)

    def band_init(self, name, alt_names=(), spatial_resolution=None, wavelength=None):
        self.name, self.alt_names, self.spatial_resolution = name, tuple(alt_names), spatial_resolution
        if wavelength is not None:
            self.wavelength = wavelength

    def seg_init(self, name, spatial_resolution, n_classes, class_names=None):
        self.name, self.alt_names, self.spatial_resolution = name, (), spatial_resolution
        self.n_classes, self._class_names = n_classes, class_names

    def cls_init(self, n_classes, class_names=None):
        self.n_classes, self._class_names = n_classes, class_names

    def ml_init(self, n_classes, class_names=None):
        self.n_classes, self.class_name = n_classes, class_names

    def task_init(self, **kw):
        self.__dict__.update(kw)

    mods = {n: types.ModuleType(n) for n in ("geobench", "geobench.dataset", "geobench.label", "geobench.task")}
    label_type = cls("geobench.label", "LabelType")
    band_info = cls("geobench.dataset", "BandInfo", init=band_init)
    spectral = cls("geobench.dataset", "SpectralBand", (band_info,))
    ns = types.SimpleNamespace(
        BandInfo=band_info,
        SpectralBand=spectral,
        Sentinel2=cls("geobench.dataset", "Sentinel2", (spectral,)),
        SegmentationClasses=cls("geobench.dataset", "SegmentationClasses", (band_info, label_type), seg_init),
        LabelType=label_type,
        Classification=cls("geobench.label", "Classification", (label_type,), cls_init),
        MultiLabelClassification=cls("geobench.label", "MultiLabelClassification", (label_type,), ml_init),
        TaskSpecifications=cls("geobench.task", "TaskSpecifications", init=task_init),
    )
    for name, obj in vars(ns).items():
        setattr(mods[obj.__module__], name, obj)
    saved = {n: sys.modules.get(n) for n in mods}
    sys.modules.update(mods)
    try:
        yield ns
    finally:
        for n, old in saved.items():
            if old is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = old


def _stats(values: np.ndarray) -> dict[str, float]:
    q = np.percentile(values, [0.1, 1, 5, 50, 95, 99, 99.9])
    return {"min": float(values.min()), "max": float(values.max()), "mean": float(values.mean()),
            "std": float(values.std()), "median": float(q[3]), "percentile_0_1": float(q[0]),
            "percentile_1": float(q[1]), "percentile_5": float(q[2]), "percentile_95": float(q[4]),
            "percentile_99": float(q[5]), "percentile_99_9": float(q[6])}


def write_sample_hdf5(path: Path, bands: list[tuple[str, Any, np.ndarray, Any]], label: Any = None) -> None:
    """One sample as GEO-Bench writes it: (descriptor, band_info, data, date) per band, label in the pickle."""
    from affine import Affine
    from rasterio.crs import CRS

    attrs: dict[str, Any] = {}
    order = []
    with h5py.File(path, "w") as fp:
        for descriptor, info, data, date in bands:
            fp.create_dataset(name=descriptor, data=data)
            attrs[descriptor] = {"date": date, "date_id": date, "spatial_resolution": info.spatial_resolution,
                                 "band_info": info, "meta_info": None,
                                 "transform": Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4500000.0),
                                 "crs": CRS.from_epsg(32631)}
            order.append(descriptor)
        if label is not None:
            attrs["label"] = label
        attrs["bands_order"] = order
        fp.attrs["pickle"] = str(pickle.dumps(attrs))


def _write_task(task_dir: Path, specs: Any, samples: dict[str, list[tuple[str, list, Any]]]) -> None:
    task_dir.mkdir(parents=True, exist_ok=True)
    with open(task_dir / "task_specs.pkl", "wb") as fd:
        pickle.dump(specs, fd, protocol=4)
    values: dict[str, list[np.ndarray]] = {}
    partition: dict[str, list[str]] = {s: [] for s in SPLIT_SIZES}
    for split, items in samples.items():
        for name, bands, label in items:
            write_sample_hdf5(task_dir / f"{name}.hdf5", bands, label)
            partition[split].append(name)
            for _, info, data, _ in bands:
                values.setdefault(info.name, []).append(np.asarray(data, np.float64).ravel())
    (task_dir / "band_stats.json").write_text(json.dumps({k: _stats(np.concatenate(v)) for k, v in values.items()}, indent=1))
    (task_dir / "default_partition.json").write_text(json.dumps(partition, indent=2))
    small = dict(partition, train=partition["train"][: max(8, len(partition["train"]) // 4)])
    (task_dir / "0.25x_train_partition.json").write_text(json.dumps(small, indent=2))


def write_toy_geobench(root: Path, size: int = 32, seg_size: int = 64, seed: int = 0) -> Path:
    """Write the three toy tasks under ``root`` in the released layout; returns ``root``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    with geobench_classes() as gb:
        s2 = [gb.Sentinel2(n, a, r, w) for n, a, r, w in S2_13]
        date = datetime.date(2018, 6, 1)

        # classification: class k brightens its band group
        groups = [(1, 2, 3), (4, 5, 6), (7, 8), (11, 12)]
        specs = gb.TaskSpecifications(dataset_name="m-toy-s2", benchmark_name="classification_v1.0",
                                      patch_size=(size, size), n_time_steps=1, bands_info=s2,
                                      label_type=gb.Classification(4, ["a", "b", "c", "d"]), spatial_resolution=10)
        samples: dict[str, list] = {}
        for split, n in SPLIT_SIZES.items():
            samples[split] = []
            for i in range(n):
                k = i % 4
                img = rng.normal(1000, 150, (13, size, size))
                img[list(groups[k])] += 500
                bands = [(f"{b.name}_{date:%Y-%m-%d}", b, img[j].astype(np.int16), date) for j, b in enumerate(s2)]
                samples[split].append((f"{split}_{i:04d}", bands, k))
        _write_task(root / "classification_v1.0" / "m-toy-s2", specs, samples)

        # multi-label: active label j brightens band j+1 (m-bigearthnet has 12 bands, no B10)
        s2_12 = s2[:10] + s2[-2:]
        specs = gb.TaskSpecifications(dataset_name="m-toy-multilabel", benchmark_name="classification_v1.0",
                                      patch_size=(size, size), n_time_steps=1, bands_info=s2_12,
                                      label_type=gb.MultiLabelClassification(5, list("vwxyz")), spatial_resolution=10)
        for split, n in SPLIT_SIZES.items():
            samples[split] = []
            for i in range(n):
                lab = (rng.random(5) < 0.4).astype(np.int64)
                img = rng.normal(1000, 150, (12, size, size))
                img[np.flatnonzero(lab) * 2 + 1] += 500
                bands = [(b.name, b, img[j].astype(np.int16), None) for j, b in enumerate(s2_12)]
                samples[split].append((f"{split}_{i:04d}", bands, lab))
        _write_task(root / "classification_v1.0" / "m-toy-multilabel", specs, samples)

        # segmentation: a red rectangle (class 1) on a green background (class 0)
        rgb = [gb.SpectralBand("Red", ("red",), 0.5, 0.665), gb.SpectralBand("Green", ("green",), 0.5, 0.56),
               gb.SpectralBand("Blue", ("blue",), 0.5, 0.49)]
        seg_label = gb.SegmentationClasses("label", spatial_resolution=0.5, n_classes=2, class_names=["bg", "roof"])
        specs = gb.TaskSpecifications(dataset_name="m-toy-seg", benchmark_name="segmentation_v1.0",
                                      patch_size=(seg_size, seg_size), n_time_steps=1, bands_info=rgb,
                                      label_type=seg_label, spatial_resolution=0.5)
        for split, n in SPLIT_SIZES.items():
            samples[split] = []
            for i in range(n):
                lab = np.zeros((seg_size, seg_size), np.uint8)
                h, w = rng.integers(seg_size // 4, seg_size * 5 // 8, 2)
                y, x = rng.integers(0, seg_size - h), rng.integers(0, seg_size - w)
                lab[y:y + h, x:x + w] = 1
                img = rng.normal(90, 20, (3, seg_size, seg_size))
                img[0] += 100 * lab
                img[1] += 80 * (1 - lab)
                bands = [(b.name, b, np.clip(img[j], 0, 255).astype(np.uint8), None) for j, b in enumerate(rgb)]
                bands.append(("label", seg_label, lab, None))
                samples[split].append((f"{split}_{i:04d}", bands, None))
        _write_task(root / "segmentation_v1.0" / "m-toy-seg", specs, samples)
    return root


def write_malicious_sample(path: Path, marker: Path) -> None:
    """An HDF5 sample whose ``pickle`` attribute would create ``marker`` if it were unpickled plainly."""

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with h5py.File(path, "w") as fp:
        fp.create_dataset("02 - Blue", data=np.zeros((4, 4), np.int16))
        fp.attrs["pickle"] = str(pickle.dumps({"bands_order": ["02 - Blue"], "label": Payload()}))
