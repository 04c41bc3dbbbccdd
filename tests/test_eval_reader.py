"""GEO-Bench reader, restricted unpickler and band mapping on a dataset in the released layout."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from geobench_fixtures import geobench_classes, write_malicious_sample

from ofa.pipeline.evaluate.bands import TASK_BAND_FIXES, plan_inputs, sample_tensors
from ofa.pipeline.evaluate.geobench import (
    BandSpec, GeoBenchError, Task, discover_tasks, load_task, read_sample,
)
from ofa.pipeline.evaluate.safe_pickle import UnsafePickleError, safe_load_file, safe_loads


def test_discover_and_task_specs(geobench_root: Path, tmp_path: Path) -> None:
    tasks = discover_tasks(geobench_root)
    assert set(tasks) == {"m-toy-s2", "m-toy-multilabel", "m-toy-seg"}
    assert discover_tasks(geobench_root / "segmentation_v1.0") == {"m-toy-seg": tasks["m-toy-seg"]}
    assert discover_tasks(tasks["m-toy-s2"]) == {"m-toy-s2": tasks["m-toy-s2"]}
    kinds = {n: load_task(p).kind for n, p in tasks.items()}
    assert kinds == {"m-toy-s2": "classification", "m-toy-multilabel": "multilabel", "m-toy-seg": "segmentation"}
    t = load_task(tasks["m-toy-s2"])
    assert (t.n_classes, t.class_names, t.patch_size, t.benchmark) == (4, ["a", "b", "c", "d"], (32, 32), "classification_v1.0")
    assert t.bands[8] == BandSpec("08A - Vegetation Red Edge", "Sentinel2", 0.865, ("8A", "08A"))
    assert t.partitions() == ["0.25x_train", "default"]
    part = t.partition("0.25x_train")
    assert len(part["train"]) == 16 and len(part["test"]) == 40
    with pytest.raises(GeoBenchError, match="no partition '0.01x_train'.*default"):
        t.partition("0.01x_train")
    with pytest.raises(GeoBenchError, match="no GEO-Bench task"):
        discover_tasks(tmp_path)


def test_read_samples(geobench_root: Path) -> None:
    cls = load_task(geobench_root / "classification_v1.0" / "m-toy-s2")
    s = read_sample(cls.sample_path("train_0001"))
    # dated datasets ("02 - Blue_2018-06-01") are keyed by the band name from the pickled band_info
    assert list(s.bands)[:2] == ["01 - Coastal aerosol", "02 - Blue"] and len(s.bands) == 13
    assert s.label == 1 and s.bands["05 - Vegetation Red Edge"].mean() > s.bands["02 - Blue"].mean() + 300
    ml = read_sample(geobench_root / "classification_v1.0" / "m-toy-multilabel" / "train_0000.hdf5")
    assert ml.label.shape == (5,) and set(np.unique(ml.label)) <= {0, 1}
    seg = read_sample(geobench_root / "segmentation_v1.0" / "m-toy-seg" / "test_0003.hdf5")
    assert seg.label.shape == (64, 64) and "label" not in seg.bands and set(seg.bands) == {"Red", "Green", "Blue"}
    with pytest.raises(GeoBenchError, match="does not exist"):
        read_sample(cls.sample_path("nope"))


def test_malicious_sample_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.hdf5"
    write_malicious_sample(bad, marker)
    with pytest.raises(UnsafePickleError) as err:
        read_sample(bad)
    assert str(bad) in str(err.value) and "open" in str(err.value)
    assert not marker.exists()


def test_malicious_task_specs_is_refused(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (eval, ("1+1",))

    (tmp_path / "task_specs.pkl").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(UnsafePickleError, match=r"task_specs.pkl: refusing to unpickle global builtins.eval"):
        load_task(tmp_path)
    # a callable living in a GEO-Bench module is not a stand-in either
    data = pickle.dumps(0).replace(b"K\x00", b"cgeobench.dataset\nload_sample_hdf5\n)R")
    with pytest.raises(UnsafePickleError, match="geobench.dataset.load_sample_hdf5"):
        safe_loads(data, source="x.pkl")
    with pytest.raises(UnsafePickleError, match="object dtypes"):
        safe_loads(pickle.dumps(np.array([None, 1], dtype=object)), source="y")


def test_stand_ins_keep_attributes(geobench_root: Path) -> None:
    specs = safe_load_file(geobench_root / "segmentation_v1.0" / "m-toy-seg" / "task_specs.pkl")
    assert type(specs).__name__ == "TaskSpecifications"
    assert specs.label_type.n_classes == 2 and specs.bands_info[0].wavelength == 0.665
    with geobench_classes() as gb:  # protocol 0 pickles go through copyreg._reconstructor
        old = pickle.dumps(gb.Classification(3, ["x", "y", "z"]), protocol=0)
    assert safe_loads(old).n_classes == 3


def _task(name: str, bands: list[BandSpec]) -> Task:
    return Task(name=name, path=Path("."), benchmark="classification_v1.0", kind="classification",
                n_classes=2, class_names=None, bands=bands)


def test_band_mapping(geobench_root: Path) -> None:
    s2 = load_task(geobench_root / "classification_v1.0" / "m-toy-s2")
    (g,) = plan_inputs(s2, "ofa")
    assert g.modality == "sentinel-2" and g.channels == 12 and g.missing == [] and "10 - SWIR - Cirrus" not in g.sources
    (w,) = plan_inputs(s2, "wavelength")
    assert w.channels == 13 and w.wavelengths == sorted(w.wavelengths) and 1.375 in w.wavelengths
    # a subset of Sentinel-2 bands: reordered by name, the rest zero-filled and flagged
    sub = _task("m-sub", [BandSpec("04 - Red", "Sentinel2", 0.665), BandSpec("02 - Blue", "Sentinel2", 0.49)])
    (g,) = plan_inputs(sub)
    assert g.sources[1] == "02 - Blue" and g.sources[3] == "04 - Red" and g.sources[0] is None
    assert len(g.missing) == 10 and "B01" in g.missing
    # EuroSAT's stored names are wrong: the 13th channel is B8A (geo-bench issue #28)
    eurosat = _task("m-eurosat", list(s2.bands))
    (g,) = plan_inputs(eurosat)
    assert g.sources[8] == "12 - SWIR" and g.sources[9] == "08A - Vegetation Red Edge"
    assert len(TASK_BAND_FIXES["m-brick-kiln"]) == 13
    # Landsat (m-forestnet) and So2Sat's Sentinel-1 + Sentinel-2 parts
    forest = _task("m-forestnet", [BandSpec(n, "Landsat8", None) for n in ("04 - Red", "03 - Green", "02 - Blue", "05 - NIR", "06 - SWIR1", "07 - SWIR2")])
    (g,) = plan_inputs(forest)
    assert g.modality == "landsat" and g.missing == ["SR_B1"] and g.sources[3] == "04 - Red"
    so2 = _task("m-so2sat", [BandSpec(n, "Sentinel1", None) for n in ("01 - VH.Real", "05 - VH.LEE Filtered", "06 - VV.LEE Filtered")]
                + [BandSpec("02 - Blue", "Sentinel2", 0.49)])
    mods = {g.modality: g for g in plan_inputs(so2)}
    assert set(mods) == {"sentinel-1", "sentinel-2"} and mods["sentinel-1"].sources == ["06 - VV.LEE Filtered", "05 - VH.LEE Filtered"]
    with pytest.raises(GeoBenchError, match="none of its bands maps.*Height"):
        plan_inputs(_task("m-x", [BandSpec("Height", "ElevationBand", None)]))


def test_normalised_tensors(geobench_root: Path) -> None:
    seg = load_task(geobench_root / "segmentation_v1.0" / "m-toy-seg")
    (g,) = plan_inputs(seg)
    assert g.modality == "naip" and g.missing == ["NIR"]
    stats = seg.band_stats()
    xs = [sample_tensors(read_sample(seg.sample_path(n)), [g], stats)[0] for n in seg.partition()["train"][:20]]
    x = np.stack([t.numpy() for t in xs])
    assert x.shape == (20, 4, 64, 64)
    assert abs(x[:, :3].mean()) < 0.2 and 0.7 < x[:, :3].std() < 1.3 and (x[:, 3] == 0).all()


def test_ndarray_cannot_be_called_directly() -> None:
    # numpy.ndarray may only appear as the subtype handed to numpy's _reconstruct
    data = b"\x80\x04cnumpy\nndarray\n(K\x03\x85\x8c\x01O\x94tR."
    with pytest.raises(UnsafePickleError, match="direct call of numpy.ndarray"):
        safe_loads(data, source="z")
    with geobench_classes() as gb:  # pickled attributes cannot replace the stand-in's own methods
        band = gb.Sentinel2("02 - Blue", (), 10, 0.49)
        band.get = "shadow"
        data = pickle.dumps(band)
    restored = safe_loads(data)
    assert restored.get("name") == "02 - Blue" and restored.get("wavelength") == 0.49
