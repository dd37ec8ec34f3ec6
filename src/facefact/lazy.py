"""Package namespaces whose public names load on first use (PEP 562 module ``__getattr__``).

A package ``__init__`` that imported its heavy modules eagerly would load torch, diffusers or
OpenCV for anyone importing one light sibling (the CLI's parsers, `faces inspect`); with this,
``from facefact.pipelines import FACTStableDiffusionPipeline`` still works and costs the same as before.

    __getattr__, __dir__ = lazy_exports(__name__, {"FACTStableDiffusionPipeline": "facefact.pipelines.classes"})
"""
from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, exports: dict[str, str]):
    """(__getattr__, __dir__) for `package` exposing each name of `exports` (name -> defining module)."""

    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
            setattr(sys.modules[package], name, value)  # later look-ups skip this function
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
