"""Run the real timm in a subprocess.

The README's setup line installs timm 1.0.31 without its dependencies into its own folder,
``.venv/timm`` (``pip install --no-deps --target .venv/timm timm==1.0.31``), not into site-packages:
timm imports torchvision at import time, torchvision has no CPU build beside this torch, and an
importable timm without torchvision would break ``accelerate`` (its CLI imports timm whenever it is
installed). The subprocess puts that folder on its path and installs a stand-in for ``torchvision.*``
whose every attribute is an inert class, for the things timm imports and these tests never use (data
transforms, datasets, a frozen batch norm); any real use of torchvision would fail loudly. A timm
installed the ordinary way (with torchvision) is used as it is. The test process never imports either."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

_STANDIN = '''
import importlib.abc, importlib.machinery, sys, types

class _Inert(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Inert(name, (), {})

class _Module(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _Inert(name, (), {})
        setattr(self, name, value)
        return value

class _StandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None
    def create_module(self, spec):
        module = _Module(spec.name)
        module.__path__ = []
        return module
    def exec_module(self, module):
        pass

sys.meta_path.insert(0, _StandIn())
'''


#: where the README's setup line puts timm
TIMM_DIR = Path(sys.prefix) / "timm"


def need_timm() -> None:
    """Skip (with the install line) where timm is not installed."""
    if importlib.util.find_spec("timm") is None and not (TIMM_DIR / "timm").is_dir():
        pytest.skip(f"timm is not installed: pip install --no-deps --target {TIMM_DIR} timm==1.0.31 "
                    "(the README's setup line does)")


def run_timm(script: str, cwd: Path, timeout: float = 300) -> dict:
    """Run ``script`` (Python that prints one JSON object on its last line) with timm importable; return it."""
    need_timm()
    path = f"import sys\nsys.path.insert(0, {str(TIMM_DIR)!r})\n" if (TIMM_DIR / "timm").is_dir() else ""
    standin = "" if importlib.util.find_spec("torchvision") else _STANDIN
    done = subprocess.run([sys.executable, "-c", path + standin + script], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
