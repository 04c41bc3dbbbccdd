"""What the item planner hands to the format modules and the chipper: the read plan of an item
(``ItemPlan``, one ``ChannelPlan`` per output channel, as plain picklable data), the error that skips an
item, the rules every format's planning shares (clean hrefs, the baseline offset) and how hrefs are opened.
Light (the standard library and the sensor registry): every format module knows these and nothing else of ingest's
planning."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from ofa.ingest.sensors import BaselineOffset

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
    kind: str = "cog"                      # the asset format that reads it (``ingest.formats.FORMATS``)
    #: what the readers may open and how large it may be (``ingest.hrefs.HrefPolicy``, ``ingest.limits.ReadLimits``;
    #: None: the defaults, no local path), set by the planner (``ingest.hrefs.guard_plan``) and checked again at open
    policy: Any = None
    limits: Any = None


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


#: float32 fill for dB pixels without a value (finite, so meta.json stays plain JSON): the nodata of channels
#: the planner sets up for a dB conversion (``convert``)
DB_NODATA = -9999.0


def processing_baseline(value: Any) -> tuple[int, int] | None:
    """``"04.00"``, ``"05.09"``, ``"N0400"`` or ``4.0`` as (major, minor); None if it is none of these."""
    text = str(value).strip().upper().lstrip("N") if value is not None else ""
    if re.fullmatch(r"\d{4}", text):
        text = f"{text[:2]}.{text[2:]}"
    match = re.fullmatch(r"(\d{1,2})(?:\.(\d{1,2}))?", text)
    return (int(match.group(1)), int(match.group(2) or 0)) if match else None


def baseline_offset(rule: BaselineOffset | None, props: dict, raster: dict, scale: float, default: float) -> float:
    """A band's offset: 0 where the catalog says it took the DN offset out already, else the item's
    ``raster:bands`` offset, else ``rule.dn * scale`` from the item's processing baseline on, else ``default``."""
    return offset_and_origin(rule, props, raster, scale, default)[0]


def offset_and_origin(rule: BaselineOffset | None, props: dict, raster: dict, scale: float,
                      default: float) -> tuple[float, str]:
    """``baseline_offset`` and where the value came from, in words (for ``ofa ingest --plan``)."""
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
