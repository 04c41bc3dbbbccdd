"""Restricted unpickling of GEO-Bench metadata (``task_specs.pkl``, the HDF5 ``pickle`` attribute).

GEO-Bench stores metadata as pickles of its own classes. Unpickling runs whatever callables a
pickle names, so a file from the internet could run code. ``RestrictedUnpickler`` resolves only:

- plain data: ``datetime`` types, ``collections.OrderedDict``, a few builtins (``set``, ``complex``...);
- numpy arrays, dtypes and scalars through guarded rebuilders (object dtypes and ndarray
  subclasses are refused, they are the known ways to smuggle code through numpy);
- GEO-Bench's own classes (``TaskSpecifications``, ``Sentinel2``, ``Classification``...) and the
  ``affine.Affine`` / ``rasterio.crs.CRS`` objects in band attributes, mapped to *inert stand-ins*:
  objects that only store the pickled attributes and have no behaviour.

Every other global raises :class:`UnsafePickleError`, naming the file and the refused global.
``geobench``, ``affine`` and ``rasterio`` are never imported.
"""
from __future__ import annotations

import collections
import datetime
import importlib
import io
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names a global outside the allow-list (or builds a refused numpy object)."""

    def __init__(self, source: str, what: str, reason: str = "not allowed in GEO-Bench metadata") -> None:
        self.source = source
        self.what = what
        super().__init__(
            f"{source}: refusing to unpickle {what} ({reason}); only plain data and GEO-Bench's "
            "metadata classes are accepted, so this file was not written by GEO-Bench or was tampered with"
        )


class StandIn:
    """Inert stand-in for a class found in GEO-Bench pickles: it only holds the pickled attributes."""

    geobench_class: str = "StandIn"

    def __new__(cls, *args: Any, **kwargs: Any) -> "StandIn":
        obj = object.__new__(cls)
        if args or kwargs:
            obj.__dict__["_args"] = args
            obj.__dict__["_kwargs"] = kwargs
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # never runs any GEO-Bench logic

    def __setstate__(self, state: Any) -> None:
        parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
        if all(p is None or isinstance(p, dict) for p in parts):  # __dict__ (and __slots__) state
            for part in parts:
                for key, value in (part or {}).items():
                    # never shadow dunders or the stand-in's own attributes (``get``, ``geobench_class``)
                    if isinstance(key, str) and not key.startswith("__") and not hasattr(type(self), key):
                        self.__dict__[key] = value
        else:
            self.__dict__["_state"] = state

    def get(self, name: str, default: Any = None) -> Any:
        """An attribute of the original object, or ``default`` (immune to pickled attributes named "get")."""
        return object.__getattribute__(self, "__dict__").get(name, default)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


def _standin(name: str, *bases: type) -> type:
    return type(name, bases or (StandIn,), {"geobench_class": name, "__module__": __name__})


#: GEO-Bench's classes (geobench.dataset, geobench.label, geobench.task) -> their GEO-Bench bases, bases
#: first: the stand-ins keep the hierarchy, so ``isinstance(x, GEOBENCH_STANDINS["SpectralBand"])`` works on them
_GEOBENCH_BASES: dict[str, tuple[str, ...]] = {
    "BandInfo": (), "SpectralBand": ("BandInfo",), "Sentinel1": ("SpectralBand",), "Sentinel2": ("SpectralBand",),
    "Landsat8": ("SpectralBand",), "Mask": ("BandInfo",), "CloudProbability": ("Mask",),
    "ElevationBand": ("BandInfo",), "MultiBand": ("BandInfo",), "HyperSpectralBands": ("MultiBand",),
    "LabelType": (), "Classification": ("LabelType",), "SemanticSegmentation": ("Classification",),
    "MultiLabelClassification": ("LabelType",), "Regression": ("LabelType",), "Detection": ("LabelType",),
    "SegmentationClasses": ("BandInfo", "LabelType"), "TaskSpecifications": (), "Band": (), "Sample": (),
    "Stats": (), "Partition": (), "Accuracy": (), "SegmentationAccuracy": (), "MultilabelAccuracy": (),
}
GEOBENCH_STANDINS: dict[str, type] = {}
for _name, _bases in _GEOBENCH_BASES.items():
    GEOBENCH_STANDINS[_name] = _standin(_name, *(GEOBENCH_STANDINS[b] for b in _bases))
Classification = GEOBENCH_STANDINS["Classification"]
SemanticSegmentation = GEOBENCH_STANDINS["SemanticSegmentation"]
MultiLabelClassification = GEOBENCH_STANDINS["MultiLabelClassification"]
SegmentationClasses = GEOBENCH_STANDINS["SegmentationClasses"]
# third-party objects stored in per-band attributes
Affine = _standin("Affine")
CRS = _standin("CRS")

# Module paths GEO-Bench classes have been pickled under (current and historical package names).
GEOBENCH_MODULES = frozenset(
    f"{pkg}{sub}"
    for pkg in ("geobench", "ccb")
    for sub in ("", ".dataset", ".label", ".task", ".io", ".io.dataset", ".io.label", ".io.task")
)

_PLAIN_GLOBALS: dict[tuple[str, str], Any] = {
    ("datetime", "date"): datetime.date,
    ("datetime", "datetime"): datetime.datetime,
    ("datetime", "time"): datetime.time,
    ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("builtins", "range"): range,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "object"): object,  # the base named by copyreg._reconstructor (protocol 0/1)
    ("affine", "Affine"): Affine,
    ("rasterio.crs", "CRS"): CRS,
}


_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _np_module(name: str) -> Any:
    """numpy's private ``_core`` module (numpy 2) or ``core`` (numpy 1)."""
    try:
        return importlib.import_module(f"numpy._core.{name}")
    except ImportError:  # numpy < 2
        return importlib.import_module(f"numpy.core.{name}")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds plain data, guarded numpy objects and inert GEO-Bench stand-ins only."""

    def __init__(self, file: Any, source: str = "<pickle>") -> None:
        super().__init__(file)
        self.source = source
        self._token = self._ndarray_token()

    # -- guarded numpy rebuilders -------------------------------------------------------------
    def _dtype(self, *args: Any, **kwargs: Any) -> np.dtype:
        dtype = np.dtype(*args, **kwargs)
        if dtype.hasobject:
            raise UnsafePickleError(self.source, f"numpy.dtype({args[0]!r})", "object dtypes can carry pickles")
        return dtype

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype is not self._token:
            raise UnsafePickleError(self.source, f"ndarray subclass {subtype!r}")
        return _np_module("multiarray")._reconstruct(np.ndarray, shape, self._dtype(dtype))

    def _scalar(self, dtype: Any, *args: Any) -> Any:
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise UnsafePickleError(self.source, f"numpy scalar of dtype {dtype!r}")
        return _np_module("multiarray").scalar(dtype, *args)

    def _frombuffer(self, buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
        return _np_module("numeric")._frombuffer(buf, self._dtype(dtype), shape, order)

    def _codecs_encode(self, text: Any, encoding: str = "utf-8") -> bytes:
        # protocol <= 2 pickles write bytes as _codecs.encode(str, "latin1")
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise UnsafePickleError(self.source, "_codecs.encode with unexpected arguments")
        return text.encode("latin1")

    def _ndarray_token(self) -> type:
        """What ``numpy.ndarray`` resolves to: a marker accepted by ``_reconstruct`` that cannot be called."""
        source = self.source

        class NdarrayToken:
            def __new__(cls, *args: Any, **kwargs: Any) -> Any:
                raise UnsafePickleError(source, "a direct call of numpy.ndarray")

        return NdarrayToken

    def _reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        # protocol 0/1 pickles of plain classes: copyreg._reconstructor(cls, object, None)
        if not (isinstance(cls, type) and issubclass(cls, StandIn)) or base is not object or state is not None:
            raise UnsafePickleError(self.source, f"copyreg._reconstructor({cls!r}, {base!r})")
        return cls.__new__(cls)

    def _numpy_globals(self) -> dict[tuple[str, str], Callable[..., Any]]:
        table: dict[tuple[str, str], Callable[..., Any]] = {
            ("numpy", "dtype"): self._dtype,
            ("numpy", "ndarray"): self._token,
            ("_codecs", "encode"): self._codecs_encode,
            ("copyreg", "_reconstructor"): self._reconstructor,
        }
        for prefix in ("numpy.core", "numpy._core"):
            table[(f"{prefix}.multiarray", "_reconstruct")] = self._reconstruct
            table[(f"{prefix}.multiarray", "scalar")] = self._scalar
            table[(f"{prefix}.numeric", "_frombuffer")] = self._frombuffer
        return table

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)  # protocol < 3 spells builtins the Python 2 way
        key = (module, name)
        if key in _PLAIN_GLOBALS:
            return _PLAIN_GLOBALS[key]
        guarded = self._numpy_globals().get(key)
        if guarded is not None:
            return guarded
        if module in GEOBENCH_MODULES and name in GEOBENCH_STANDINS:
            return GEOBENCH_STANDINS[name]
        raise UnsafePickleError(self.source, f"global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(self.source, f"persistent id {pid!r}")


def safe_loads(data: bytes, source: str = "<pickle>") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; ``source`` names the file in errors."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=source).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated or corrupt data: say which file
        raise pickle.UnpicklingError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})") from None


def safe_load_file(path: str | Path) -> Any:
    """Unpickle a file such as ``task_specs.pkl`` with :class:`RestrictedUnpickler`."""
    path = Path(path)
    return safe_loads(path.read_bytes(), source=str(path))
