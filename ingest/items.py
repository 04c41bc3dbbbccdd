"""Turn a STAC item into a read plan: for each channel, which asset/href/band index to read and
its scale, offset, nodata and wavelength (item metadata first, registry fallback)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from ofa.ingest.formats import asset_format
from ofa.ingest.hrefs import HrefPolicy, guard_plan, self_href
from ofa.ingest.limits import REFUSED_KEY, ReadLimits
from ofa.ingest.plans import DB_NODATA, ChannelPlan, ItemError, ItemPlan, clean_href, offset_and_origin
from ofa.ingest.sensors import BandSpec, BaselineOffset, CloudMask, SensorSpec, sensor_for_collection


def item_etag(item: dict) -> str:
    """A content hash of the item document with clean hrefs (stands in for the HTTP ETag)."""
    doc = json.loads(json.dumps(item))
    for asset in (doc.get("assets") or {}).values():
        if isinstance(asset, dict) and "href" in asset:
            asset["href"] = clean_href(str(asset["href"]))
    doc.pop("links", None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def item_crs(item: dict) -> str | None:
    props = item.get("properties") or {}
    if props.get("proj:code"):
        return str(props["proj:code"])
    if props.get("proj:epsg"):
        return f"EPSG:{int(props['proj:epsg'])}"
    return None


def _band_meta(asset: dict, key: str, index: int) -> dict:
    entries = asset.get(key) or []
    return entries[index - 1] if isinstance(entries, list) and len(entries) >= index and isinstance(entries[index - 1], dict) else {}


def _absent(band: BandSpec) -> ChannelPlan:
    """A channel the sample carries zero-filled and marked invalid (``band_valid``)."""
    return ChannelPlan(name=band.name, asset="", href="", index=band.index, wavelength=band.wavelength, gsd=band.gsd,
                       scale=band.scale, offset=band.offset, nodata=band.nodata, valid=False)


def _channel(assets: dict, band: BandSpec, props: dict, rule: BaselineOffset | None) -> ChannelPlan:
    key = next((k for k in band.keys if k in assets), None)
    if key is None and band.optional:
        return _absent(band)
    if key is None:
        data_keys = sorted(k for k, a in assets.items() if "data" in (a.get("roles") or ["data"]))
        shown = ", ".join(data_keys[:12]) + (f", ... ({len(data_keys)} in all)" if len(data_keys) > 12 else "")
        raise ItemError(f"missing asset for band {band.name} (tried {', '.join(band.keys)}; item has {shown or 'none'})")
    asset = assets[key]
    if not isinstance(asset, dict) or not asset.get("href"):
        raise ItemError(f"asset {key!r} has no href")
    eo = _band_meta(asset, "eo:bands", band.index)
    raster = _band_meta(asset, "raster:bands", band.index)
    scale = float(1.0 if raster.get("scale", band.scale) is None else raster.get("scale", band.scale))
    nodata = raster["nodata"] if "nodata" in raster else band.nodata
    if isinstance(nodata, str):  # "nan", "inf"
        nodata = float(nodata)
    offset, offset_from = offset_and_origin(rule, props, raster, scale, band.offset)
    unit = raster.get("unit")
    return ChannelPlan(
        name=band.name, asset=key, href=clean_href(str(asset["href"])), index=band.index,
        wavelength=float(eo.get("center_wavelength") or band.wavelength),
        gsd=float(raster.get("spatial_resolution") or eo.get("gsd") or asset.get("gsd") or band.gsd),
        scale=scale, offset=offset, nodata=None if nodata is None else float(nodata),
        origins=(("scale", "item raster:bands" if "scale" in raster else "registry"), ("offset", offset_from),
                 ("nodata", "item raster:bands" if "nodata" in raster else "registry")),
        unit=str(unit).strip() or None if unit is not None else None,
    )


@dataclass(frozen=True)
class AssetKeys:
    """Where an item with one asset per band (GeoTIFFs) keeps its bands and cloud mask: the assets the
    registry's keys name (formats that keep bands inside an asset, such as Zarr, locate them themselves)."""

    assets: dict

    def channel(self, band: BandSpec, props: dict, rule: BaselineOffset | None) -> ChannelPlan:
        return _channel(self.assets, band, props, rule)

    def mask(self, mask: CloudMask | None) -> tuple[str | None, str | None]:
        """(asset key, clean href) of the cloud mask; (None, None) without a rule or its asset."""
        key = next((k for k in mask.keys if k in self.assets), None) if mask else None
        return key, clean_href(str(self.assets[key]["href"])) if key else None


def plan_item(item: dict, bands: list[str] | None = None, sensor: SensorSpec | None = None,
              policy: HrefPolicy | None = None, limits: ReadLimits | None = None) -> ItemPlan:
    """Resolve ``item`` against the registry; raise ``ItemError`` naming what is wrong. Every href the plan
    will open passes ``policy`` (default: remote hrefs only) and its declared size ``limits``
    (``ingest.hrefs.guard_plan``); the plan carries both to the readers, which check again where they open."""
    if isinstance(item, dict) and item.get(REFUSED_KEY):
        raise ItemError(str(item[REFUSED_KEY]))
    try:
        return guard_plan(_plan_item(item, bands, sensor), policy, limits, self_href(item))
    except ItemError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:  # malformed STAC JSON
        item_id = item.get("id") if isinstance(item, dict) else None
        raise ItemError(f"malformed item {item_id!r}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None


def _plan_item(item: dict, bands: list[str] | None, sensor: SensorSpec | None) -> ItemPlan:
    if not isinstance(item, dict) or not item.get("id"):
        raise ItemError("malformed item: no id")
    try:
        collection = str(item.get("collection") or "")
        sensor = sensor or sensor_for_collection(collection)
    except KeyError as exc:
        raise ItemError(str(exc)) from None
    assets = item.get("assets")
    if not isinstance(assets, dict) or not assets:
        raise ItemError("malformed item: no assets")
    props = item.get("properties")
    if not isinstance(props, dict):
        raise ItemError("malformed item: no properties")
    wanted = sensor.bands
    if bands:
        wanted = tuple(b for b in sensor.bands if b.name in bands or (b.common_name and b.common_name in bands))
        if not wanted:
            raise ItemError(f"none of the requested bands {bands} belong to sensor {sensor.id} ({', '.join(sensor.band_names)})")
    # the format registry says which kind of asset the item is and where its bands are in it
    fmt = asset_format(assets, wanted, sensor)
    where = fmt.locate(assets, wanted) if fmt.locate else AssetKeys(assets)
    # every sample keeps the sensor's channels: bands left out by --bands are carried invalid, like absent ones
    channels = tuple(where.channel(b, props, sensor.baseline_offset) if b in wanted else _absent(b) for b in sensor.bands)
    if not any(c.valid for c in channels):
        raise ItemError(f"no band of sensor {sensor.id} in the item (tried {', '.join(k for b in wanted for k in b.keys)})")
    quantity, quantity_from = sensor.quantity, "registry"
    if sensor.sar:
        quantity, quantity_from, channels = sar_channels(sensor, collection, assets, props, channels)
    mask = sensor.cloud_mask
    mask_key, mask_href = where.mask(mask)
    return ItemPlan(
        item_id=str(item["id"]), collection=collection, sensor=sensor.id,
        datetime=str(props.get("datetime") or props.get("start_datetime") or ""),
        channels=channels,
        mask_asset=mask_key,
        mask_href=mask_href,
        mask_rule=mask.rule if mask_key else None,
        mask_cloud=tuple(mask.cloud) if mask_key else (),
        mask_fill=tuple(mask.fill) if mask_key else (),
        sar=sensor.sar, crs=item_crs(item), geometry=item.get("geometry"), shape=_finest_shape(item, channels),
        quantity=quantity, quantity_from=quantity_from, kind=fmt.kind,
    )


#: units an item may state for a SAR asset (``raster:bands[].unit``, any case) -> what its values are
SAR_UNITS = {"db": "db", "decibel": "db", "decibels": "db", "linear": "linear", "amplitude": "amplitude"}


def _stated_unit(present: list[ChannelPlan]) -> str | None:
    """The unit the item states for its SAR assets (one of ``SAR_UNITS``' values), None when it states none."""
    units = {(c.unit or "").lower() for c in present}
    if units == {""}:
        return None
    if len(units) > 1:
        raise ItemError(f"the polarisations state different units ({', '.join(f'{c.asset}: {c.unit}' for c in present)})")
    unit = units.pop()
    if unit not in SAR_UNITS:
        raise ItemError(f"asset {present[0].asset!r} states unit {present[0].unit!r}; known SAR units: dB, decibel, "
                        "linear, amplitude")
    return SAR_UNITS[unit]


def sar_channels(sensor: SensorSpec, collection: str, assets: dict, props: dict,
                 channels: tuple[ChannelPlan, ...]) -> tuple[str | None, str, tuple[ChannelPlan, ...]]:
    """The quantity a SAR item's samples will hold, why, and its channels set up for the conversion there.

    What the item states wins: a ``raster:bands`` unit of ``dB`` means the values are the quantity
    already (never converted again; the registry's DN no-data 0 does not apply), ``linear`` power
    becomes dB by 10*log10, ``amplitude`` by 20*log10 (GRD amplitude stays digital numbers). Without a
    unit the collection's default applies (the registry's ``products``, collection -> (source, target)):
    GRD ``amplitude_dn`` becomes ``sigma0_db`` when every present channel's calibration annotation
    (``schema-calibration-{asset key}``) is linked, else stays ``amplitude_dn`` (integer DNs: a float
    file refutes it at open); linear ``gamma0`` (RTC) becomes ``gamma0_db``. The item's
    ``sar:pixel_spacing_*`` is the channels' GSD, and a GCP-only raster is never geocoded finer than it
    (nor than its GCPs show: ``ingest.sar.geocoding_spacing``)."""
    spacing = [props.get(k) for k in ("sar:pixel_spacing_range", "sar:pixel_spacing_azimuth")]
    if all(isinstance(v, (int, float)) and v > 0 for v in spacing):
        channels = tuple(dataclasses.replace(c, gsd=float(max(spacing)), spacing=float(max(spacing))) for c in channels)
    source, target = sensor.products.get(collection, (sensor.quantity, sensor.quantity))
    present = [c for c in channels if c.valid]
    unit = _stated_unit(present)
    if unit == "db":   # already in dB: as stored
        return target, f"item raster:bands unit {present[0].unit!r}: already dB, not converted", tuple(
            _db_nodata(c, DB_NODATA) if c.valid else c for c in channels)
    if unit == "linear" or (unit == "amplitude" and source != "amplitude_dn"):
        convert = "db" if unit == "linear" else "amplitude_db"
        why = f"item raster:bands unit {present[0].unit!r}: {'10' if unit == 'linear' else '20'}*log10"
        return target, why, _converted(channels, convert, {}, DB_NODATA)
    links = {c.asset: (assets.get(f"schema-calibration-{c.asset.lower()}") or {}).get("href") for c in present}
    stated = f"item raster:bands unit {present[0].unit!r}" if unit else f"no unit stated: {collection} default"
    if source == target or (target == "sigma0_db" and not all(links.values())):
        dn = source == "amplitude_dn"
        return source, f"{stated} ({source}{', no calibration annotation linked' if dn else ''})", tuple(
            dataclasses.replace(c, assumes_dn=dn) if c.valid else c for c in channels)
    convert = "sigma0_db" if target == "sigma0_db" else "db"
    why = f"{stated} ({source} -> {target}: {'calibration annotation LUT' if convert == 'sigma0_db' else '10*log10'})"
    return target, why, _converted(channels, convert, links, DB_NODATA)


def _db_nodata(channel: ChannelPlan, db_nodata: float) -> ChannelPlan:
    """A dB channel's no data: what the item states, else ``db_nodata`` (pixels off the source; the
    registry's DN no data 0 is a valid dB value)."""
    if dict(channel.origins).get("nodata") != "registry":
        return channel
    origin = ("nodata", f"{db_nodata:g}: none stated, marks pixels off the source (0 is a valid dB value)")
    return dataclasses.replace(channel, nodata=db_nodata, origins=(*channel.origins[:2], origin))


def _converted(channels: tuple[ChannelPlan, ...], convert: str, links: dict, db_nodata: float) -> tuple[ChannelPlan, ...]:
    """The present channels set up for a conversion to float32 dB (nodata ``db_nodata``)."""
    return tuple(dataclasses.replace(
        c, convert=convert, calibration=clean_href(str(links[c.asset])) if convert == "sigma0_db" else None,
        source_nodata=c.nodata, nodata=db_nodata, scale=1.0, offset=0.0,
        assumes_dn=convert == "sigma0_db") if c.valid else c for c in channels)


def _finest_shape(item: dict, channels: tuple[ChannelPlan, ...]) -> tuple[int, int] | None:
    finest = min((c for c in channels if c.valid), key=lambda c: c.gsd)
    shape = item["assets"][finest.asset].get("proj:shape") or item["properties"].get("proj:shape")
    try:
        return (int(shape[0]), int(shape[1])) if shape else None
    except (TypeError, ValueError, IndexError):
        return None
