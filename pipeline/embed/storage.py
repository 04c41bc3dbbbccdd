"""Where outputs go: local folders or object stores, through the project's one fsspec entry point."""
from __future__ import annotations

from typing import Any

import fsspec
from zarr.storage import FsspecStore, LocalStore

from ofa.ingest.storage import get_fs, join

__all__ = ["Target", "get_fs", "join"]


class Target:
    """An output URL with its filesystem; writes of small files are all-or-nothing."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        self.storage_options = storage_options
        self.fs, self.root = get_fs(self.url, storage_options)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.local = "file" in protocols

    def path(self, *parts: str) -> str:
        return join(self.root, *parts)

    def put(self, path: str, data: bytes) -> None:
        """Write ``data`` at ``path`` whole: local files through a temporary name, objects in one PUT."""
        if not self.local:
            self.fs.pipe_file(path, data)
            return
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{path}.tmp"
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self.fs.mv(tmp, path)

    def read(self, path: str) -> bytes | None:
        """The bytes at ``path``, or None if there is nothing there."""
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            return None

    def zarr_store(self) -> Any:
        """A zarr (v3) store for this URL: a local folder, or fsspec with the same options as ``get_fs``."""
        if self.local:
            return LocalStore(self.root)
        fs = fsspec.filesystem(self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0],
                               asynchronous=True, **self.fs.storage_options)
        return FsspecStore(fs, path=self.root)
