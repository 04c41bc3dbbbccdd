"""Which asset hrefs an ingest may open, decided by one function, ``HrefPolicy.check``.

A catalog is anyone's: its hrefs must not choose which local files, GDAL virtual file systems or
internal addresses a job reads with the user's credentials. The planner checks every href of an item's
read plan before anything is opened (``guard_plan``: a refused href makes the item a ``skipped`` entry
naming the rule), and every reader checks again where it opens one (``HrefGate``, the signing hook's
front door: COG and SAR rasters through GDAL, SAR calibration annotations and Zarr stores through fsspec,
``ofa ingest --plan``'s header reads), so no later code path opens an href the plan did not pass.

The rules, in order:

- an href naming a GDAL virtual file system (``/vsi`` anywhere in it), or markup/control characters
  (GDAL opens inline VRT XML), is refused, always: ingest adds ``/vsis3/`` itself where it needs it;
- schemes: ``https``, ``http``, ``s3``, ``gs``, ``az``/``abfs`` (what GDAL and fsspec read as object
  stores); a local path or ``file://`` URL only when the catalog itself is on disk and the path resolves
  inside its folder (symlinks followed), or with ``--allow-local-hrefs``; any other scheme is refused;
- link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10, ``fd00:ec2::254``,
  100.100.100.200, ``metadata.google.internal``...) are refused, always, in any spelling of the address
  (decimal, hex, octal, IPv4-mapped IPv6) and when a host name resolves to one (resolved once per
  process; a name that does not resolve passes, its read fails on its own);
- ``--deny-href-hosts`` patterns refuse matching hosts (object stores: buckets), ``--allow-href-hosts``
  patterns, when given, are the only remote hosts read.

Relative hrefs resolve against the item's own location (its ``self`` link), as STAC says: from an API
they become that server's URLs, from a static catalog on disk paths under its folder.
Light: the standard library and ``ingest.plans`` (the ``ofa`` command's option types import this module).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import functools
import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urljoin, urlsplit

from ofa.ingest.limits import ReadLimits
from ofa.ingest.plans import ChannelPlan, ItemError, ItemPlan

#: remote schemes: the object stores GDAL and fsspec read (az and abfs are one in fsspec/adlfs)
REMOTE_SCHEMES = ("https", "http", "s3", "gs", "az", "abfs")
#: host names of cloud instance metadata services (lower case)
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                            "instance-data.ec2.internal"})
#: addresses refused whatever the options: link-local (cloud metadata lives there) and known metadata services
_REFUSED_NETS = tuple(ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128",
                                                        "100.100.100.200/32"))
_VSI = re.compile(r"/vsi", re.IGNORECASE)
_DRIVER_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_]+:(?!//)")   # GTIFF_DIR:1:/x.tif, NETCDF:"f.nc":var, ...
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$", re.IGNORECASE)


class HrefRefused(ItemError):
    """An href the policy does not let the job open (the item is skipped); ``str()`` is ``href refused: RULE: HREF``."""

    def __init__(self, rule: str, href: str):
        self.rule, self.href = rule, href
        super().__init__(f"href refused: {rule}: {href[:300]}")

    def __reduce__(self) -> tuple:   # picklable with its two arguments (Dask moves exceptions between processes)
        return HrefRefused, (self.rule, self.href)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an IP address when it is one in any spelling resolvers accept (``2852039166``,
    ``0xa9fea9fe``, ``0251.0376.0251.0376``, ``::ffff:169.254.169.254``), else None."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        if not _LEGACY_IPV4.match(host):
            return None
        try:
            ip = ipaddress.ip_address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(ip, ipaddress.IPv6Address) and (ip.ipv4_mapped or ip.sixtofour):
        return ip.ipv4_mapped or ip.sixtofour
    return ip


def _refused_address(ip: Any) -> bool:
    return any(ip.version == net.version and ip in net for net in _REFUSED_NETS)


@functools.lru_cache(maxsize=4096)
def resolved_addresses(host: str) -> tuple[str, ...]:
    """The addresses ``host`` resolves to (cached per process); () when it does not resolve."""
    try:
        return tuple(sorted({info[4][0] for info in socket.getaddrinfo(host, None)}))
    except (OSError, UnicodeError):
        return ()


def metadata_host(host: str, resolve: bool = True) -> str | None:
    """Why ``host`` is a link-local or cloud metadata address (None when it is not one)."""
    host = host.lower().rstrip(".")
    if host in METADATA_NAMES:
        return "cloud metadata address"
    ip = _address(host)
    if ip is not None:
        return "link-local or cloud metadata address" if _refused_address(ip) else None
    if resolve:
        for text in resolved_addresses(host):
            addr = _address(text)
            if addr is not None and _refused_address(addr):
                return f"host name resolving to a link-local or cloud metadata address ({text})"
    return None


def _local_path(href: str, parts: Any) -> str:
    """The filesystem path a local href names (``file://`` URLs: their path; a host other than localhost is refused)."""
    if parts.scheme.lower() != "file":
        return href
    if parts.netloc not in ("", "localhost"):
        raise HrefRefused("file:// URL naming a host", href)
    return parts.path


def _inside(path: str, root: str) -> bool:
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


@dataclass(frozen=True)
class HrefPolicy:
    """What hrefs a run may open (plain picklable data: it travels with each item's read plan)."""

    allow_local: bool = False            # --allow-local-hrefs
    local_root: str | None = None        # the catalog's folder (real path) when the catalog is on disk
    allow_hosts: tuple[str, ...] = ()    # --allow-href-hosts patterns (empty: any host)
    deny_hosts: tuple[str, ...] = ()     # --deny-href-hosts patterns
    origin: str = "a remote catalog"     # how refusals name the catalog: "an HTTP catalog", ...
    resolve_names: bool = True           # look host names up for metadata addresses

    def to_dict(self) -> dict[str, Any]:
        """What the manifest records (the local root and origin follow from the catalog)."""
        return {"allow_local_hrefs": self.allow_local, "allow_href_hosts": list(self.allow_hosts),
                "deny_href_hosts": list(self.deny_hosts)}

    def check(self, href: str, base: str | None = None) -> str:
        """The href to open for ``href`` (relative ones resolved against ``base``, the item's location);
        raise ``HrefRefused`` naming the rule when the policy refuses it."""
        if not isinstance(href, str) or not href.strip():
            raise HrefRefused("empty href", str(href))
        if href != href.strip() or any(ord(c) < 32 or c in "<>" for c in href):
            raise HrefRefused("not a URL or path (control characters or markup)", href)
        if _VSI.search(href):
            raise HrefRefused("GDAL virtual path", href)
        if _DRIVER_PREFIX.match(href) and urlsplit(href).scheme.lower() not in REMOTE_SCHEMES:
            raise HrefRefused("GDAL connection string", href)
        href = resolve(href, base)
        if _VSI.search(href):
            raise HrefRefused("GDAL virtual path", href)
        parts = urlsplit(href)
        scheme = parts.scheme.lower() if len(parts.scheme) > 1 else ""
        if scheme in ("", "file"):
            self._check_local(href, parts)
        elif scheme in REMOTE_SCHEMES:
            self._check_remote(href, parts, scheme)
        else:
            raise HrefRefused(f"scheme {scheme!r} not allowed (allowed: {', '.join(REMOTE_SCHEMES)}, local paths)", href)
        return href

    def _check_local(self, href: str, parts: Any) -> None:
        path = _local_path(href, parts)
        if self.allow_local:
            return
        if self.local_root is None:
            raise HrefRefused(f"local path from {self.origin} (--allow-local-hrefs reads it)", href)
        if not os.path.isabs(path) or not _inside(path, self.local_root):
            raise HrefRefused("local path outside the catalog's folder", href)

    def _check_remote(self, href: str, parts: Any, scheme: str) -> None:
        try:
            host = (parts.hostname or "") if scheme in ("http", "https") else parts.netloc.rsplit("@", 1)[-1].lower()
            parts.port  # noqa: B018 - a malformed port raises here
        except ValueError:
            raise HrefRefused("malformed URL", href) from None
        if not host:
            raise HrefRefused("URL without a host", href)
        why = metadata_host(host, resolve=False)
        if why:
            raise HrefRefused(why, href)
        denied = next((p for p in self.deny_hosts if fnmatch.fnmatch(host, p.lower())), None)
        if denied:
            raise HrefRefused(f"host {host} matches --deny-href-hosts {denied!r}", href)
        if self.allow_hosts and not any(fnmatch.fnmatch(host, p.lower()) for p in self.allow_hosts):
            raise HrefRefused(f"host {host} not in --allow-href-hosts", href)
        why = metadata_host(host) if self.resolve_names and scheme in ("http", "https") else None
        if why:   # last: a name is looked up only when nothing else refused it
            raise HrefRefused(why, href)


#: the policy of ``--allow-local-hrefs`` on a remote catalog: for items naming files of this machine (the tests')
LOCAL_FILES = HrefPolicy(allow_local=True)


def resolve(href: str, base: str | None) -> str:
    """``href`` made absolute against ``base`` (a URL or a local file path) when it is a relative path."""
    parts = urlsplit(href)
    if not base or (parts.scheme and len(parts.scheme) > 1) or href.startswith("/"):
        return href
    base_parts = urlsplit(base)
    if base_parts.scheme and len(base_parts.scheme) > 1 and base_parts.scheme.lower() != "file":
        return urljoin(base, href)
    folder = os.path.dirname(_local_path(base, base_parts))
    return os.path.normpath(os.path.join(folder, href)) if folder else href


def catalog_folder(catalog: str) -> str | None:
    """The folder of a catalog on disk (a path or ``file://`` URL; a file's parent), as a real path; None for a remote one."""
    parts = urlsplit(catalog)
    if parts.scheme and len(parts.scheme) > 1 and parts.scheme.lower() != "file":
        return None
    path = os.path.realpath(parts.path if parts.scheme.lower() == "file" else catalog)
    return path if os.path.isdir(path) else os.path.dirname(path)


def policy_for(catalog: str, allow_local: bool = False, allow_hosts: Any = (), deny_hosts: Any = ()) -> HrefPolicy:
    """The policy of a run on ``catalog``: a catalog on disk may name paths inside its own folder."""
    scheme, root = urlsplit(catalog).scheme.lower(), catalog_folder(catalog)
    origin = "an HTTP catalog" if scheme in ("http", "https") else "a catalog on disk" if root else f"a {scheme} catalog"
    return HrefPolicy(allow_local=bool(allow_local), local_root=root,
                      allow_hosts=tuple(allow_hosts or ()), deny_hosts=tuple(deny_hosts or ()), origin=origin)


class HrefGate:
    """The one way readers turn a plan's href into what they open: the policy's check, then the signing hook."""

    def __init__(self, policy: HrefPolicy | None, sign: Callable[[str], str]):
        self.policy = policy if policy is not None else HrefPolicy()
        self.sign = sign

    def __call__(self, href: str) -> str:
        return self.sign(self.policy.check(href))


def self_href(item: dict) -> str | None:
    """The item's own location (its ``self`` link), which its relative hrefs resolve against."""
    links = item.get("links") if isinstance(item, dict) else None
    return next((str(link["href"]) for link in links or [] if isinstance(link, dict) and link.get("rel") == "self"
                 and isinstance(link.get("href"), str)), None)


def guard_plan(plan: ItemPlan, policy: HrefPolicy | None = None, limits: ReadLimits | None = None,
               base: str | None = None) -> ItemPlan:
    """``plan`` with every href it will open checked by ``policy`` (relative ones resolved against ``base``) and
    its declared shape by ``limits``, both attached for the readers' own checks; ``ItemError`` naming the rule
    (and the asset) when one is refused. Nothing is opened here."""
    policy = policy if policy is not None else HrefPolicy()
    limits = limits if limits is not None else ReadLimits()

    def checked(href: str | None, asset: str) -> str | None:
        if not href:
            return href
        root, sep, inside = href.partition("#") if plan.kind == "zarr" else (href, "", "")
        try:
            return policy.check(root, base) + sep + inside
        except HrefRefused as exc:
            raise HrefRefused(exc.rule, f"{exc.href} (asset {asset!r})") from None

    channels = tuple(_checked_channel(c, checked) for c in plan.channels)
    mask_href = checked(plan.mask_href, plan.mask_asset or "mask")
    if plan.shape:
        limits.check_pixels(plan.shape[0], plan.shape[1], "the item's proj:shape")
    return dataclasses.replace(plan, channels=channels, mask_href=mask_href, policy=policy, limits=limits)


def _checked_channel(channel: ChannelPlan, checked: Callable[[str | None, str], str | None]) -> ChannelPlan:
    if not channel.valid:
        return channel
    calibration = checked(channel.calibration, f"calibration of {channel.asset}")
    return dataclasses.replace(channel, href=checked(channel.href, channel.asset), calibration=calibration)
