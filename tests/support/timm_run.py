"""Run the real timm (installed with ``pip install --no-deps timm==1.0.31``, as the README's setup line does)
in a subprocess. timm imports torchvision at import time for things these tests never use (data
transforms, datasets, a frozen batch norm), and torchvision has no CPU build beside this torch; the
subprocess installs a stand-in for ``torchvision.*`` whose every attribute is an inert class, so
``import timm`` succeeds and any real use of torchvision would fail loudly. The test process itself
never imports the stand-in."""
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


def need_timm() -> None:
    """Skip (with the install line) where timm is not installed."""
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed: pip install --no-deps timm==1.0.31 (the README's setup line does)")


def run_timm(script: str, cwd: Path, timeout: float = 300) -> dict:
    """Run ``script`` (Python that prints one JSON object on its last line) with timm importable; return it."""
    need_timm()
    done = subprocess.run([sys.executable, "-c", _STANDIN + script], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
