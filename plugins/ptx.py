"""The PTX entry a TensorRT AOT plugin hands over, made to match TensorRT's launch ABI.

TensorRT launches an AOT plugin's kernel with exactly: the input pointers, the ``SymIntExprs`` extra
arguments, the output pointers (``tensorrt.plugin.aot_impl``'s documentation), nothing more. Triton >= 3.3
appends hidden parameters to every kernel it compiles (Triton 3.9: a global-scratch and a profile-scratch
pointer), so its PTX declares 15 parameters where TensorRT passes 13, and the driver would read the two
missing ones past the end of TensorRT's argument array.

The fix kept here is the one that can be proven without a GPU: drop trailing parameters from the
``.entry`` declaration, but only those the kernel body never names (Triton declares them whether or not the
kernel uses scratch memory; ours uses none, ``global_scratch_size == 0``). A kernel that did read one is
refused instead: its PTX cannot run under TensorRT's ABI at all. The tests assemble the trimmed PTX with
``ptxas`` and ``benchmarks/gpu_check.py`` launches it with TensorRT's argument list on a GPU.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_ENTRY = re.compile(r"\.entry\s+(?P<name>[\w$]+)\s*\((?P<params>[^)]*)\)", re.S)


@dataclass(frozen=True)
class Param:
    """One ``.param`` of a PTX entry: its declaration text, its name and whether it is a pointer."""

    decl: str
    name: str

    @property
    def is_pointer(self) -> bool:
        return ".ptr" in self.decl or ".u64" in self.decl

    @property
    def bits(self) -> int:
        m = re.search(r"\.[us](\d+)\b", self.decl)
        return int(m.group(1)) if m else 0


class PTXABIError(ValueError):
    """The PTX cannot be launched with the argument list TensorRT passes."""


def entry_params(ptx: str, kernel_name: str) -> list[Param]:
    """The parameters of ``.entry kernel_name(...)`` in declaration order."""
    entry = _find_entry(ptx, kernel_name)
    decls = [d.strip() for d in entry.group("params").split(",") if d.strip()]
    return [Param(d, d.split()[-1]) for d in decls]


def trim_to_abi(ptx: str, kernel_name: str, n_params: int) -> str:
    """Return ``ptx`` whose entry declares exactly its first ``n_params`` parameters.

    Parameters past ``n_params`` must be unreferenced in the whole module (they are Triton's hidden
    scratch pointers); otherwise PTXABIError. Fewer than ``n_params`` is an error too: TensorRT would
    pass arguments the kernel does not expect.
    """
    params = entry_params(ptx, kernel_name)
    if len(params) < n_params:
        raise PTXABIError(f"{kernel_name} declares {len(params)} parameters, TensorRT passes {n_params}")
    extra = params[n_params:]
    if not extra:
        return ptx
    used = [p.name for p in extra if len(re.findall(rf"(?<![\w$]){re.escape(p.name)}(?![\w$])", ptx)) > 1]
    if used:
        raise PTXABIError(f"{kernel_name} reads its hidden parameter(s) {', '.join(used)} (Triton scratch memory), "
                          f"which TensorRT's AOT launch does not pass")
    entry = _find_entry(ptx, kernel_name)
    kept = ",\n\t".join(p.decl for p in params[:n_params])
    return ptx[:entry.start("params")] + "\n\t" + kept + "\n" + ptx[entry.end("params"):]


def _find_entry(ptx: str, kernel_name: str) -> re.Match:
    for m in _ENTRY.finditer(ptx):
        if m.group("name") == kernel_name:
            return m
    raise PTXABIError(f"no .entry {kernel_name} in the PTX")
