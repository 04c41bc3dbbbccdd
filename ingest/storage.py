"""fsspec helpers shared by ingest and pipeline: one way to turn a URL into a filesystem."""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

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


#: exception class names (botocore, aiobotocore, aiohttp) that mean "no usable credentials"
_NO_CREDENTIALS = ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError", "NoAuthTokenError")
_UNREACHABLE = ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ClientConnectorError",
                "ServerDisconnectedError", "ConnectionClosedError")
_DENIED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "Forbidden")


class StorageError(OSError):
    """A local or object store at ``url`` could not be reached, read or written (credentials, permissions,
    network), after the client's retries. ``str()`` is one line naming the URL (and option), what happened and
    a fix (then ``hint``, e.g. how to resume)."""

    def __init__(self, url: str, cause: BaseException, option: str | None = None, hint: str | None = None) -> None:
        self.url, self.cause, self.option = url, cause, option
        what, fix = _diagnose(cause)
        super().__init__(f"{option + ' ' if option else ''}{url}: {what}; {fix}" + (f"; {hint}" if hint else ""))


def _diagnose(cause: BaseException) -> tuple[str, str]:
    """``(what happened, how to fix it)`` for a storage client exception."""
    names = {c.__name__ for c in type(cause).__mro__}
    text, name = " ".join(str(cause).split()), type(cause).__name__
    if names & set(_NO_CREDENTIALS):
        return (f"no credentials found ({name})", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), "
                "or pass key/secret (or anon: true for a public bucket) in the storage options")
    if isinstance(cause, PermissionError) or any(code in text for code in _DENIED):
        return f"access denied ({name}: {text[:160]})", "check that these credentials may read (and write) this bucket and prefix"
    if names & set(_UNREACHABLE) or isinstance(cause, (ConnectionError, TimeoutError)):
        return (f"cannot reach the storage endpoint ({name})", "check the network and the endpoint "
                "(AWS_ENDPOINT_URL or client_kwargs.endpoint_url in the storage options)")
    return f"failed ({name}: {text[:200]})", "check the URL, the credentials and the network, then rerun"


def is_storage_error(exc: BaseException) -> bool:
    """An I/O or object-store client failure (OSError other than a missing path, botocore/aiohttp/s3fs errors)."""
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return False
    module = type(exc).__module__ or ""
    return isinstance(exc, OSError) or module.startswith(("botocore", "aiobotocore", "aiohttp", "s3fs"))


@contextlib.contextmanager
def storage_access(url: str, option: str | None = None, hint: str | None = None) -> Iterator[None]:
    """Turn storage client failures inside the block into one ``StorageError`` naming ``url`` (and ``option``)."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is a storage failure
        if not is_storage_error(exc):
            raise
        raise StorageError(url, exc, option, hint) from exc
