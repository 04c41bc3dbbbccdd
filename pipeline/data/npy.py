"""``.npy`` decoding: a sample's pixel bytes viewed as an array without copying them."""
from __future__ import annotations

import functools
import io
import math

import numpy as np


@functools.lru_cache(maxsize=32)
def _npy_header(head: bytes) -> tuple[int, np.dtype, tuple[int, ...], bool]:
    """``(data offset, dtype, shape, fortran_order)`` of a version 1/2 ``.npy`` header (parsed by numpy)."""
    f = io.BytesIO(head)
    major, _ = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    if dtype.hasobject:
        raise ValueError("pixels.npy holds Python objects (refused, like np.load(allow_pickle=False))")
    return f.tell(), dtype, shape, fortran


def read_npy(data: bytes) -> np.ndarray:
    """``pixels.npy`` bytes -> read-only array viewing them (no copy), as ``np.load(allow_pickle=False)`` reads them."""
    if data[:6] != b"\x93NUMPY" or data[6:7] not in (b"\x01", b"\x02"):
        return np.load(io.BytesIO(data), allow_pickle=False)  # other versions, or an error message from numpy
    n = 10 if data[6] == 1 else 12
    offset, dtype, shape, fortran = _npy_header(bytes(data[: n + int.from_bytes(data[8:n], "little")]))
    arr = np.frombuffer(data, dtype, count=math.prod(shape), offset=offset)
    arr.flags.writeable = False  # also over a bytearray: the sample's bytes are never changed through it
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
