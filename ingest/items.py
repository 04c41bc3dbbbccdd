"""Turn a STAC item into a read plan: for each channel, which asset/href/band index to read and
its scale, offset, nodata and wavelength (item metadata first, registry fallback)."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from ofa.ingest.sensors import BandSpec, BaselineOffset, SensorSpec, sensor_for_collection

#: a hook that turns a clean href into a readable one (e.g. Planetary Computer SAS signing);
#: its result is only used to open the file and never written anywhere.
SignHref = Callable[[str], str]


class ItemError(ValueError):
    """An item that cannot be ingested; the message says why."""


@dataclass(frozen=True)
class ChannelPlan:
    """Where one output channel comes from."""

    name: str
    asset: str
    href: str          # clean: no query string, no credentials
    index: int         # 1-based band index in the asset
    wavelength: float
    gsd: float
    scale: float
    offset: float
    nodata: float | None
    valid: bool = True                 # False: not in the item (or left out by --bands): zero-filled, never read
    calibration: str | None = None     # SAR: clean href of the calibration annotation the conversion needs
    convert: str | None = None         # SAR: "sigma0_db" (DN + calibration LUT), "db" (linear power), None
    source_nodata: float | None = None  # SAR: the file's no-data value when ``convert`` changes it
    #: where scale, offset and nodata came from ("item raster:bands", "processing baseline ...", "registry"...)
    origins: tuple[tuple[str, str], ...] = ()
    unit: str | None = None            # the unit the item states for the band (raster:bands[].unit); SAR reads it
    spacing: float | None = None       # SAR: the item's sar:pixel_spacing (m); GCP geocoding may only coarsen with it
    assumes_dn: bool = False           # SAR: read as the collection's integer digital numbers (a float file refutes it)


@dataclass(frozen=True)
class ItemPlan:
    """All an ingest task needs to read an item, as plain picklable data."""

    item_id: str
    collection: str
    sensor: str
    datetime: str
    channels: tuple[ChannelPlan, ...]
    mask_asset: str | None
    mask_href: str | None
    mask_rule: str | None
    mask_cloud: tuple[int, ...]
    mask_fill: tuple[int, ...]
    sar: bool
    crs: str | None      # from proj:code / proj:epsg when the item gives one
    geometry: dict | None
    shape: tuple[int, int] | None = None   # proj:shape of the finest band, when the item says
    aoi: dict | None = None                # search area (WGS84 geometry): chips must touch it
    quantity: str | None = None            # what the samples' pixels hold (registry/sar.py names)
    quantity_from: str | None = None       # why: the item's stated unit, or the collection's default


def clean_href(href: str) -> str:
    """Drop the query string, fragment and any user:password from an href."""
    parts = urlsplit(href)
    if not parts.scheme or len(parts.scheme) == 1:  # a local path (or a Windows drive letter)
        return href.split("?", 1)[0]
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


_QUERY = re.compile(r"(?<=[^\s?])\?(?=[^\s'\"()<>]*=)[^\s'\"()<>]*")
_USERINFO = re.compile(r"(?<=://)[^/\s@]+@")


def redact(text: str) -> str:
    """Strip URL query strings (signed-URL tokens) and user:password@ from free text such as error messages."""
    return _USERINFO.sub("", _QUERY.sub("?<redacted>", text))


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


def processing_baseline(value: Any) -> tuple[int, int] | None:
    """``"04.00"``, ``"05.09"``, ``"N0400"`` or ``4.0`` as (major, minor); None if it is none of these."""
    text = str(value).strip().upper().lstrip("N") if value is not None else ""
    if re.fullmatch(r"\d{4}", text):
        text = f"{text[:2]}.{text[2:]}"
    match = re.fullmatch(r"(\d{1,2})(?:\.(\d{1,2}))?", text)
    return (int(match.group(1)), int(match.group(2) or 0)) if match else None


def _baseline_offset(rule: BaselineOffset | None, props: dict, raster: dict, scale: float, default: float) -> float:
    """A band's offset: 0 where the catalog says it took the DN offset out already, else the item's
    ``raster:bands`` offset, else ``rule.dn * scale`` from the item's processing baseline on, else ``default``."""
    return offset_and_origin(rule, props, raster, scale, default)[0]


def offset_and_origin(rule: BaselineOffset | None, props: dict, raster: dict, scale: float,
                      default: float) -> tuple[float, str]:
    """``_baseline_offset`` and where the value came from, in words (for ``ofa ingest --plan``)."""
    if rule:
        flag = next((k for k in rule.removed if props.get(k) is True), None)
        if flag:
            return 0.0, f"0: {flag} is true (DN offset already removed)"
    if raster.get("offset") is not None:
        return float(raster["offset"]), "item raster:bands"
    if rule:
        key, baseline = next(((k, b) for k in rule.baseline_keys if (b := processing_baseline(props.get(k)))), (None, None))
        if baseline is not None:
            since = f"{rule.since[0]:02d}.{rule.since[1]:02d}"
            if baseline >= rule.since:
                return rule.dn * scale, f"processing baseline rule ({key} {props[key]} >= {since}: DN {rule.dn:g})"
            return 0.0, f"processing baseline rule ({key} {props[key]} < {since}: none)"
    return default, "registry"


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


def plan_item(item: dict, bands: list[str] | None = None, sensor: SensorSpec | None = None) -> ItemPlan:
    """Resolve ``item`` against the registry; raise ``ItemError`` naming what is wrong."""
    try:
        return _plan_item(item, bands, sensor)
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
    from ofa.ingest.zarr_items import zarr_assets, zarr_channel, zarr_mask

    # every sample keeps the sensor's channels: bands left out by --bands are carried invalid, like absent ones
    zassets = zarr_assets(assets, wanted)   # EOPF products and Zarr datacubes
    read = functools.partial(zarr_channel, zassets=zassets) if zassets else functools.partial(_channel, assets)
    channels = tuple(read(b, props, sensor.baseline_offset) if b in wanted else _absent(b) for b in sensor.bands)
    if not any(c.valid for c in channels):
        raise ItemError(f"no band of sensor {sensor.id} in the item (tried {', '.join(k for b in wanted for k in b.keys)})")
    quantity, quantity_from = sensor.quantity, "registry"
    if sensor.sar:
        quantity, quantity_from, channels = sar_channels(sensor, collection, assets, props, channels)
    mask = sensor.cloud_mask
    if zassets:
        mask_key, mask_href = zarr_mask(mask, zassets)
    else:
        mask_key = next((k for k in mask.keys if k in assets), None) if mask else None
        mask_href = clean_href(str(assets[mask_key]["href"])) if mask_key else None
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
        quantity=quantity, quantity_from=quantity_from,
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
    from ofa.ingest.sar import DB_NODATA

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


def identity_href(href: str) -> str:
    """The default ``SignHref``: read hrefs as they are."""
    return href


def read_href(href: str) -> str:
    """What rasterio/GDAL should open for a clean href (``s3://`` goes through /vsis3/)."""
    if href.startswith("s3://"):
        return "/vsis3/" + href[len("s3://"):]
    if href.startswith("file://"):
        return href[len("file://"):]
    return href
