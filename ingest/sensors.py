"""The sensor registry, as data: which STAC collections belong to which sensor, the asset key of
each band in every catalog convention we know, wavelengths, GSD, default scale/offset/nodata, the
cloud-mask rule and the processing-baseline offset rule.

What an item says about itself (``eo:bands``, ``raster:bands``, ``proj:*``, its processing baseline)
wins; these values are the fallback (one exception: see ``BaselineOffset.removed``). A new sensor
is a new ``SensorSpec`` in ``SENSORS``, not a new code branch.
The one description of a sensor: the loader, evaluation and plots read it from here; ``model/``
(which imports nothing from ingest) keeps default modalities that a test holds equal to it.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BandSpec:
    """One channel of a sensor."""

    name: str                    # contract band name, e.g. "B04", "VV", "SR_B4", "R"
    wavelength: float            # centre wavelength, micrometres (SAR: 5.405, DOFA convention)
    gsd: float                   # nominal metres per pixel
    keys: tuple[str, ...]        # asset keys in the known catalog conventions, tried in order
    index: int = 1               # 1-based band index inside the asset (multi-band assets)
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    common_name: str | None = None
    optional: bool = False       # an item without it still ingests: the channel is zero-filled, band_valid false
    zarr: tuple[str, ...] = ()   # array paths inside a Zarr product (e.g. EOPF), tried in order


@dataclass(frozen=True)
class CloudMask:
    """How to read clouds (and fill) from a mask asset.

    ``rule`` is ``"classes"`` (pixel value in ``cloud`` is cloud, in ``fill`` is no data, e.g. the
    Sentinel-2 SCL) or ``"bits"`` (bit ``i`` set for ``i`` in ``cloud`` is cloud, in ``fill`` is no
    data, e.g. Landsat QA_PIXEL).
    """

    keys: tuple[str, ...]
    rule: str
    cloud: tuple[int, ...]
    fill: tuple[int, ...] = ()
    zarr: tuple[str, ...] = ()   # array paths inside a Zarr product, tried in order


@dataclass(frozen=True)
class BaselineOffset:
    """An offset a product adds to its digital numbers from one processing baseline on.

    Sentinel-2 L1C and L2A from baseline 04.00 (25 January 2022) carry ``RADIO_ADD_OFFSET`` /
    ``BOA_ADD_OFFSET`` = -1000: reflectance = (DN - 1000) / 10000. Items that say their baseline
    (``s2:processing_baseline``) but not their offset (no ``raster:bands``, as Planetary Computer's)
    get ``dn * scale`` as the band offset. ``removed`` names item properties that, when true, say
    the catalog already took the offset out of the files' DNs (Earth Search's ``*:boa_offset_applied``):
    such items get offset 0 whatever their ``raster:bands`` say.
    """

    baseline_keys: tuple[str, ...]   # item properties naming the processing baseline, tried in order
    since: tuple[int, int]           # first baseline with the offset, as (major, minor)
    dn: float                        # the offset in digital numbers
    removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class SensorSpec:
    """A sensor: its collections, bands in channel order, optional cloud mask and DN offset rule."""

    id: str
    collections: tuple[str, ...]
    bands: tuple[BandSpec, ...]
    cloud_mask: CloudMask | None = None
    sar: bool = False            # all-zero pixels along the swath border are no data
    baseline_offset: BaselineOffset | None = None
    quantity: str | None = None  # what samples hold (meta.json ``quantity``); statistics never pool two quantities
    #: collection -> (what its files hold, what ingest makes of it), where the two differ (SAR: ingest/sar.py)
    products: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def band_names(self) -> list[str]:
        return [b.name for b in self.bands]

    @property
    def wavelengths(self) -> list[float]:
        """Centre wavelength per band (micrometres), in channel order."""
        return [b.wavelength for b in self.bands]


def _s2(name: str, common: str, wavelength: float, gsd: float) -> BandSpec:
    # EOPF Zarr products keep each band at its native resolution under measurements/reflectance/r{gsd}m
    return BandSpec(name, wavelength, gsd, keys=(common, name), scale=1e-4, offset=0.0, nodata=0, common_name=common,
                    zarr=(f"measurements/reflectance/r{gsd}m/{name.lower()}",))


def _ls(name: str, common: str, wavelength: float) -> BandSpec:
    return BandSpec(name, wavelength, 30.0, keys=(name, common, name.lower()), scale=2.75e-05, offset=-0.2, nodata=0,
                    common_name=common)


# Earth Search keys are common names ("coastal", "red", "nir08", "cirrus"), Planetary Computer, the
# Copernicus Data Space and the legacy Earth Search collection use band names ("B01", "B04", "B8A").
_S2_VNIR = (
    _s2("B01", "coastal", 0.443, 60), _s2("B02", "blue", 0.49, 10), _s2("B03", "green", 0.56, 10),
    _s2("B04", "red", 0.665, 10), _s2("B05", "rededge1", 0.705, 20), _s2("B06", "rededge2", 0.74, 20),
    _s2("B07", "rededge3", 0.783, 20), _s2("B08", "nir", 0.842, 10), _s2("B8A", "nir08", 0.865, 20),
    _s2("B09", "nir09", 0.945, 60),
)
_S2_SWIR = (_s2("B11", "swir16", 1.61, 20), _s2("B12", "swir22", 2.19, 20))

#: L1C RADIO_ADD_OFFSET and L2A BOA_ADD_OFFSET, both -1000 from processing baseline 04.00 (ESA)
_S2_OFFSET = BaselineOffset(
    baseline_keys=("s2:processing_baseline", "sentinel:processing_baseline"), since=(4, 0), dn=-1000.0,
    removed=("earthsearch:boa_offset_applied", "sentinel:boa_offset_applied"),
)

SENTINEL_2 = SensorSpec(
    id="sentinel-2",
    collections=("sentinel-2-l2a", "sentinel-s2-l2a-cogs", "sentinel-2-c1-l2a"),
    bands=_S2_VNIR + _S2_SWIR,
    # SCL: 0 no data, 3 cloud shadow, 8 cloud medium, 9 cloud high, 10 thin cirrus
    cloud_mask=CloudMask(keys=("scl", "SCL"), rule="classes", cloud=(3, 8, 9, 10), fill=(0,),
                         zarr=("conditions/mask/l2a_classification/r20m/scl",)),
    baseline_offset=_S2_OFFSET,
    quantity="surface_reflectance",
)

# Top-of-atmosphere reflectance: its own sensor id, so its statistics (and the model's patch
# embedding) are never pooled with the L2A surface reflectance of ``sentinel-2``. It has B10
# (cirrus, 1.375 um) and no scene classification: cloud_fraction is null (not measured).
SENTINEL_2_L1C = SensorSpec(
    id="sentinel-2-l1c",
    collections=("sentinel-2-l1c", "sentinel-s2-l1c"),
    bands=_S2_VNIR + (_s2("B10", "cirrus", 1.375, 60),) + _S2_SWIR,
    baseline_offset=_S2_OFFSET,
    quantity="toa_reflectance",
)

SENTINEL_1 = SensorSpec(
    id="sentinel-1",
    collections=("sentinel-1-grd", "sentinel-1-rtc"),
    bands=(
        # channel 1 is the co-polarisation, channel 2 the cross-polarisation: VV/VH, or HH/HV for
        # dual-pol scenes acquired in HH (polar and sea-ice modes); the asset key says which
        # single-polarisation scenes carry the polarisation they lack zero-filled and invalid, either way
        # round (VV or HH only: no cross-polarisation; VH or HV only: no co-polarisation)
        BandSpec("VV", 5.405, 10.0, keys=("vv", "VV", "hh", "HH"), nodata=0, optional=True),
        BandSpec("VH", 5.405, 10.0, keys=("vh", "VH", "hv", "HV"), nodata=0, optional=True),
    ),
    sar=True,
    quantity="sigma0_db",
    # collection -> (what its files hold, what ingest makes of it): see ingest/sar.py
    products={"sentinel-1-grd": ("amplitude_dn", "sigma0_db"), "sentinel-1-rtc": ("gamma0", "gamma0_db")},
)

LANDSAT = SensorSpec(
    id="landsat",
    collections=("landsat-c2-l2", "landsat-8-c2-l2", "landsat-9-c2-l2"),
    bands=(
        _ls("SR_B1", "coastal", 0.443), _ls("SR_B2", "blue", 0.482), _ls("SR_B3", "green", 0.562),
        _ls("SR_B4", "red", 0.655), _ls("SR_B5", "nir08", 0.865), _ls("SR_B6", "swir16", 1.609),
        _ls("SR_B7", "swir22", 2.201),
    ),
    # QA_PIXEL bits: 0 fill, 1 dilated cloud, 3 cloud, 4 cloud shadow
    cloud_mask=CloudMask(keys=("QA_PIXEL", "qa_pixel"), rule="bits", cloud=(1, 3, 4), fill=(0,)),
    quantity="surface_reflectance",
)

NAIP = SensorSpec(
    id="naip",
    collections=("naip",),
    bands=(
        BandSpec("R", 0.635, 0.6, keys=("image",), index=1, common_name="red"),
        BandSpec("G", 0.555, 0.6, keys=("image",), index=2, common_name="green"),
        BandSpec("B", 0.465, 0.6, keys=("image",), index=3, common_name="blue"),
        BandSpec("NIR", 0.845, 0.6, keys=("image",), index=4, common_name="nir"),
    ),
    quantity="dn",
)

#: sensor id -> spec
SENSORS: dict[str, SensorSpec] = {s.id: s for s in (SENTINEL_2, SENTINEL_2_L1C, SENTINEL_1, LANDSAT, NAIP)}


class UnknownSensorError(KeyError):
    """A collection that no registry entry claims."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def sensor_for_collection(collection: str) -> SensorSpec:
    """The registry entry that claims STAC collection ``collection``."""
    for spec in SENSORS.values():
        if collection in spec.collections:
            return spec
    known = sorted(c for s in SENSORS.values() for c in s.collections)
    raise UnknownSensorError(f"collection {collection!r} is not in the sensor registry (known: {', '.join(known)})")
