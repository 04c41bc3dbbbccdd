"""The kinds of asset ingest reads, in one registry keyed by what an asset is (as xarray's backends are
keyed by engine): arrays in Zarr stores, SAR GeoTIFFs that may be georeferenced by ground control points
only, and GeoTIFFs (COGs).

The item planner (``items.plan_item``) asks ``asset_format`` which kind an item's assets are, finds its
bands with that format's ``locate`` (or, for one asset per band, by the registry's asset keys) and records
the kind in ``ItemPlan.kind``; the chipper opens the plan with ``reader_for``. The format modules
(``readers``, ``sar``, ``zarr_items``, ``zarr_reader``) know only the planner's types (``ingest.plans``);
this registry is the one module that knows them all. A new kind of asset is a ``GridReader`` and an entry here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from ofa.ingest.hrefs import HrefGate
from ofa.ingest.limits import ReadLimits
from ofa.ingest.plans import ChannelPlan, ItemPlan, SignHref
from ofa.ingest.readers import GridReader, RasterioReader
from ofa.ingest.sar import SarReader
from ofa.ingest.sensors import BandSpec, BaselineOffset, CloudMask, SensorSpec
from ofa.ingest.zarr_items import zarr_bands
from ofa.ingest.zarr_reader import ZarrReader


class BandLocator(Protocol):
    """Where an item keeps its bands and its cloud mask, in assets of one kind."""

    def channel(self, band: BandSpec, props: dict, rule: BaselineOffset | None) -> ChannelPlan:
        """The read plan of ``band`` (``props``: the item's properties; ``rule``: the sensor's baseline offset)."""

    def mask(self, mask: CloudMask | None) -> tuple[str | None, str | None]:
        """(asset key, href) of the cloud mask; (None, None) when there is none."""


@dataclass(frozen=True)
class AssetFormat:
    """One kind of asset: which items it claims, where their bands are, and the reader of its plans."""

    kind: str
    description: str
    #: whether an item (its assets, the bands wanted of it, its sensor) is read as this kind
    claims: Callable[[dict, tuple[BandSpec, ...], SensorSpec], bool]
    #: the reader of a plan of this kind, given the href signing hook
    reader: Callable[[ItemPlan, SignHref], GridReader]
    #: the bands inside the item's assets; None: one asset per band, named by the registry's keys
    locate: Callable[[dict, tuple[BandSpec, ...]], BandLocator | None] | None = None


#: the formats, asked in this order: the first that claims an item reads it
FORMATS: dict[str, AssetFormat] = {f.kind: f for f in (
    AssetFormat("zarr", "arrays in Zarr stores: ESA EOPF products and datacubes (hrefs store#array)",
                claims=lambda assets, bands, sensor: zarr_bands(assets, bands) is not None,
                reader=ZarrReader, locate=zarr_bands),
    AssetFormat("sar", "SAR GeoTIFFs: geocoded through their GCPs when they have no geotransform, converted to dB",
                claims=lambda assets, bands, sensor: sensor.sar, reader=SarReader),
    AssetFormat("cog", "GeoTIFFs (COGs) through GDAL",
                claims=lambda assets, bands, sensor: True, reader=lambda plan, sign_href: RasterioReader(sign_href)),
)}


def asset_format(assets: dict, bands: tuple[BandSpec, ...], sensor: SensorSpec) -> AssetFormat:
    """The format that reads an item with these assets, for these bands of ``sensor``."""
    return next(f for f in FORMATS.values() if f.claims(assets, bands, sensor))


def reader_for(plan: ItemPlan, sign_href: SignHref) -> GridReader:
    """The reader of ``plan``'s assets: the one of its kind (``ItemPlan.kind``). It opens every href through
    ``HrefGate`` (the plan's href policy, then ``sign_href``) and bounds what it opens by the plan's limits."""
    reader = FORMATS[plan.kind].reader(plan, HrefGate(plan.policy, sign_href))
    reader.limits = plan.limits if plan.limits is not None else ReadLimits()
    return reader
