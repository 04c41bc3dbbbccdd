"""Task bands -> model inputs: which GEO-Bench band feeds which channel of which embedding.

A sensor is data here: ``MODEL_BANDS`` lists each modality's channels as the sensor registry
(``ingest.sensors``) has them, ``_canonical`` names the model band a GEO-Bench band is, and ``TASK_BAND_FIXES`` corrects the two
released tasks whose stored band names do not match their channels (geo-bench issues #28, #29).

With the per-sensor (``ofa``) embedding every modality gets exactly its pretraining channels:
bands are reordered by name and absent ones are zero-filled (0 = the mean after normalisation)
and reported in ``InputGroup.missing``. With the ``wavelength`` embedding a group holds the
task's own bands with their own wavelengths, nothing filled.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ofa.ingest.sensors import SENSORS

from .geobench import BandSpec, GeoBenchError, GeoSample, Task

#: modality -> (band id, centre wavelength in um) in channel order, from the sensor registry
MODEL_BANDS: dict[str, tuple[tuple[str, float], ...]] = {
    spec.id: tuple((b.name, b.wavelength) for b in spec.bands) for spec in SENSORS.values()
}
#: bands GEO-Bench tasks carry that no registry sensor reads (Sentinel-2 L1C's cirrus band is not in
#: L2A products); the wavelength embedding can still take them
EXTRA_WAVELENGTHS = {("sentinel-2", "B10"): 1.375}

#: released tasks whose stored band names are wrong: actual Sentinel-2 band per stored position
#: (None = not a spectral band: brick-kiln's last three are the 8-bit true-colour composite)
TASK_BAND_FIXES: dict[str, list[str | None]] = {
    # EuroSAT files hold B8A last (geo-bench issue #28)
    "m-eurosat": ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A"],
    # brick-kiln exported B1 B2 B3 B4 B5 B7 B8A B8 B11 B12 TCI_R TCI_G TCI_B (geo-bench issue #29)
    "m-brick-kiln": ["B01", "B02", "B03", "B04", "B05", "B07", "B8A", "B08", "B11", "B12", None, None, None],
}

_S2_IDS = {"1": "B01", "2": "B02", "3": "B03", "4": "B04", "5": "B05", "6": "B06", "7": "B07",
           "8": "B08", "8A": "B8A", "9": "B09", "10": "B10", "11": "B11", "12": "B12"}
_AERIAL = {"red": "R", "r": "R", "green": "G", "g": "G", "blue": "B", "b": "B", "nir": "NIR",
           "nearinfrared": "NIR", "near infrared": "NIR"}


def _number(name: str) -> str | None:
    """'08A - Vegetation Red Edge' -> '8A'; 'B02' -> '2'; 'SR_B4' -> '4'."""
    m = re.match(r"^(?:SR_)?B?0*(\d+A?)\b", name.strip().upper())
    return m.group(1) if m else None


def _canonical(band: BandSpec) -> tuple[str, str] | None:
    """(modality, model band id) for a GEO-Bench band, or None when no modality takes it."""
    names = [band.name, *band.alt_names]
    if band.sensor == "Sentinel2":
        num = _number(band.name)
        return ("sentinel-2", _S2_IDS[num]) if num in _S2_IDS else None
    if band.sensor == "Landsat8":
        num = _number(band.name)
        return ("landsat", f"SR_B{num}") if num in {str(i) for i in range(1, 8)} else None
    if band.sensor == "Sentinel1":
        # So2Sat's Sentinel-1 part: the Lee-filtered intensities are the backscatter channels
        low = band.name.lower()
        if "lee filtered" in low and low.endswith("filtered"):
            return ("sentinel-1", "VV" if "vv" in low else "VH")
        return ("sentinel-1", band.name.upper()) if band.name.upper() in ("VV", "VH") else None
    if band.sensor in ("SpectralBand", "BandInfo"):
        for n in names:
            if n.strip().lower() in _AERIAL:
                return ("naip", _AERIAL[n.strip().lower()])
    return None


@dataclass
class InputGroup:
    """One model input of a task: a modality, and per channel the GEO-Bench band that fills it."""

    modality: str
    sources: list[str | None]            # GEO-Bench band name per channel; None = zero-filled
    wavelengths: list[float]             # per channel (um)
    missing: list[str] = field(default_factory=list)  # model band ids zero-filled

    @property
    def channels(self) -> int:
        return len(self.sources)


def _task_bands(task: Task) -> list[tuple[BandSpec, tuple[str, str] | None]]:
    """Each task band with the model band it really is (applying ``TASK_BAND_FIXES``)."""
    fix = TASK_BAND_FIXES.get(task.name)
    if fix is not None and len(fix) == len(task.bands) and all(b.sensor == "Sentinel2" for b in task.bands):
        return [(b, ("sentinel-2", f) if f else None) for b, f in zip(task.bands, fix)]
    return [(b, _canonical(b)) for b in task.bands]


def plan_inputs(task: Task, embedding: str = "ofa") -> list[InputGroup]:
    """The model inputs of ``task`` for ``embedding`` ("ofa" or "wavelength"), in a fixed modality order."""
    if embedding not in ("ofa", "wavelength"):
        raise ValueError(f"embedding={embedding!r}: expected 'ofa' or 'wavelength'")
    by_modality: dict[str, dict[str, str]] = {}
    for band, target in _task_bands(task):
        if target is None:
            continue
        by_modality.setdefault(target[0], {}).setdefault(target[1], band.name)
    groups: list[InputGroup] = []
    for modality, table in MODEL_BANDS.items():
        present = by_modality.get(modality)
        if not present:
            continue
        if embedding == "ofa":
            sources = [present.get(bid) for bid, _ in table]
            missing = [bid for bid, _ in table if bid not in present]
            groups.append(InputGroup(modality, sources, [wl for _, wl in table], missing))
        else:
            wl_of = {bid: wl for bid, wl in table} | {b: w for (m, b), w in EXTRA_WAVELENGTHS.items() if m == modality}
            ids = [bid for bid in present if bid in wl_of]
            ids.sort(key=lambda b: wl_of[b])
            groups.append(InputGroup(modality, [present[b] for b in ids], [wl_of[b] for b in ids]))
    if not groups:
        listed = ", ".join(f"{b.name} ({b.sensor})" for b in task.bands)
        raise GeoBenchError(f"task {task.name}: none of its bands maps to a model input (bands: {listed})")
    return groups



def sample_tensors(sample: GeoSample, groups: list[InputGroup], stats: dict[str, tuple[float, float]]) -> list[torch.Tensor]:
    """Normalised [C, H, W] float tensors (native size), one per group; zero-filled channels are 0."""
    out = []
    for group in groups:
        shape = None
        for src in group.sources:
            if src is not None:
                arr = sample.bands.get(src)
                if arr is None:
                    raise GeoBenchError(f"sample {sample.name}: band {src!r} is missing (has: {sorted(sample.bands)})")
                shape = arr.shape[:2] if shape is None else tuple(max(a, b) for a, b in zip(shape, arr.shape[:2]))
        assert shape is not None
        chans = []
        for src in group.sources:
            if src is None:
                chans.append(torch.zeros(shape))
                continue
            arr = np.asarray(sample.bands[src], dtype=np.float32)
            if arr.ndim == 3:
                arr = arr[..., 0]
            if src not in stats:
                raise GeoBenchError(f"band_stats.json has no entry for band {src!r} (sample {sample.name})")
            mean, std = stats[src]
            x = torch.from_numpy((arr - mean) / (std if std > 0 else 1.0))
            if tuple(x.shape) != tuple(shape):  # lower-resolution band: bilinear onto the finest grid
                x = F.interpolate(x[None, None], size=shape, mode="bilinear", align_corners=False)[0, 0]
            chans.append(x)
        out.append(torch.nan_to_num(torch.stack(chans)))
    return out


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of a [N, C, H, W] batch to size x size (as in pretraining)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > size)
