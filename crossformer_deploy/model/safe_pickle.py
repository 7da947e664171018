"""A pickle module for ``torch.load(pickle_module=...)`` that builds data and never runs a checkpoint's code.

The authors' training script saves its yacs ``CfgNode`` next to the weights (and argparse/apex state
turns up in other training scripts). ``torch.load(weights_only=True)`` refuses those: its unpickler
only builds plain ``dict`` contents, and a CfgNode is a dict subclass. Importing yacs to rebuild one is
exactly the code execution a checkpoint must not trigger, so every global a pickle names is resolved
against the allow-list below, and config classes resolve to inert stand-ins defined here that hold the
same keys and values. Anything else raises ``pickle.UnpicklingError`` naming the global.

Why this is safe: a pickle can only call what ``find_class`` hands out (REDUCE/NEWOBJ need a callable
from a global), and everything handed out here builds tensors or plain data from plain data.
"""
from __future__ import annotations

import _codecs
import collections
import pickle
from typing import IO, Any

import numpy as np
import torch

__all__ = ["ArgsNamespace", "ConfigNode", "Unpickler", "load"]


class ConfigNode(dict):
    """Stand-in for ``yacs.config.CfgNode``: its keys and values as a dict (nested nodes too)."""

    def __setstate__(self, state: object) -> None:
        # yacs keeps its flags (__immutable__, __new_allowed__, ...) in the instance dict: kept as data,
        # under one attribute, so a pickle cannot plant instance attributes that pickle would later call.
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"yacs CfgNode with a state of type {type(state).__name__}")
        self.yacs_flags = dict(state)


class ArgsNamespace:
    """Stand-in for ``argparse.Namespace``: plain attributes."""

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, dict) or not all(isinstance(k, str) and not k.startswith("__") for k in state):
            raise pickle.UnpicklingError("argparse Namespace with a state that is not plain attributes")
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return "Namespace(" + ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items()) + ")"


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """numpy scalars and dtypes (mmcv's meta keeps e.g. a best score as numpy.float64): pure data."""
    core = np._core if hasattr(np, "_core") else np.core
    found: dict[tuple[str, str], Any] = {("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        found[(mod, "scalar")] = core.multiarray.scalar
    dtypes = getattr(np, "dtypes", None)
    for name in dir(dtypes) if dtypes else ():
        if name.endswith("DType"):
            found[("numpy.dtypes", name)] = getattr(dtypes, name)
    return found


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("_codecs", "encode"): _codecs.encode,  # how protocol 2 stores bytes
    ("yacs.config", "CfgNode"): ConfigNode,
    ("argparse", "Namespace"): ArgsNamespace,
    **_numpy_globals(),
}
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}  # names protocol-2 pickles use


class Unpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals come from the allow-list only (torch adds its storage types)."""

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not an allowed type") from None


def load(file: IO[bytes], **kwargs: Any) -> Any:
    """``pickle.load`` with the restricted ``Unpickler`` (torch's legacy format calls this)."""
    return Unpickler(file, **kwargs).load()
