"""Which processor this is, and the BLAS code path that suits it.

torch 1.13.1's wheels link Intel MKL 2020.0 statically. That MKL picks its float32 GEMM
kernels by CPU vendor, not by instruction set: on an AMD (or Hygon) processor it runs a
generic SSE path, 3-4 times slower than its AVX2 path, although the processor has AVX2.
``MKL_DEBUG_CPU_TYPE=5`` makes it take the AVX2 path; MKL reads the variable once, at its
first call, so it must be set before the first matrix product of the process. Later MKLs
(2020.1 on) ignore the variable and choose better paths by themselves, so setting it costs
nothing there. A value the user set is always kept.

This module imports nothing heavy: ``streamkd/__init__.py`` calls :func:`use_fast_blas_path`
before anything else of the package runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, MutableMapping, Optional

MKL_CPU_TYPE_VARIABLE = "MKL_DEBUG_CPU_TYPE"
MKL_AVX2_CPU_TYPE = "5"
# Vendors whose processors MKL 2020.0 sends down its generic path although they have AVX2.
NON_INTEL_X86_VENDORS = ("AuthenticAMD", "HygonGenuine")


def cpuinfo(path: Path = Path("/proc/cpuinfo")) -> Dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: Dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor's block ends at the first blank line
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_model(info: Optional[Dict[str, str]] = None) -> str:
    """The processor's model name (Linux), else what the platform module knows."""
    import platform

    info = cpuinfo() if info is None else info
    return info.get("model name") or platform.processor() or platform.machine()


def cpu_vendor(info: Optional[Dict[str, str]] = None) -> str:
    """``GenuineIntel``, ``AuthenticAMD``, ...; ``unknown`` where /proc/cpuinfo says nothing."""
    info = cpuinfo() if info is None else info
    return info.get("vendor_id", "unknown")


# The variables that choose MKL's code path, and with it the float results of its kernels.
MKL_PATH_VARIABLES = (MKL_CPU_TYPE_VARIABLE, "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")


def mkl_settings(environ: Optional[MutableMapping[str, str]] = None) -> Dict[str, str]:
    """The MKL code-path variables set in this process (a run's record keeps them)."""
    environ = os.environ if environ is None else environ
    return {name: environ[name] for name in MKL_PATH_VARIABLES if name in environ}


def use_fast_blas_path(
    environ: Optional[MutableMapping[str, str]] = None, vendor: Optional[str] = None
) -> Optional[str]:
    """Point MKL at its AVX2 kernels on a non-Intel x86 processor that has AVX2.

    Returns the value now in effect (the user's own if they set one), None where nothing applies.
    """
    environ = os.environ if environ is None else environ
    if MKL_CPU_TYPE_VARIABLE in environ:
        return environ[MKL_CPU_TYPE_VARIABLE]
    info = cpuinfo() if vendor is None else {"vendor_id": vendor, "flags": "avx2"}
    if cpu_vendor(info) not in NON_INTEL_X86_VENDORS or "avx2" not in info.get("flags", "").split():
        return None
    environ[MKL_CPU_TYPE_VARIABLE] = MKL_AVX2_CPU_TYPE
    return MKL_AVX2_CPU_TYPE
