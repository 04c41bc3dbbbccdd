"""fsspec helpers shared by ingest and pipeline: one way to turn a URL into a filesystem."""
from __future__ import annotations

import os
from typing import Any

import fsspec
from fsspec.core import url_to_fs


def fs_options(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fsspec options ``get_fs`` opens ``url`` with: ``storage_options`` plus, for ``s3://``, an
    endpoint from ``storage_options`` (``client_kwargs.endpoint_url`` or ``endpoint_url``) or from the
    ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` variables."""
    options = dict(storage_options or {})
    if url.startswith("s3://"):
        endpoint = options.pop("endpoint_url", None) or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            client_kwargs = dict(options.get("client_kwargs") or {})
            client_kwargs.setdefault("endpoint_url", endpoint)
            options["client_kwargs"] = client_kwargs
    return options


def get_fs(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(filesystem, path)`` for a local path, ``file://`` or ``s3://`` URL (options as
    ``fs_options`` makes them; credentials come from the usual AWS variables and profiles)."""
    return url_to_fs(url, **fs_options(url, storage_options))


def join(url: str, *parts: str) -> str:
    """Join URL path parts with '/' (works for local paths and object-store URLs)."""
    out = url.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out
