"""OpenBLAS's kernels chosen from the CPU's features, before numpy loads OpenBLAS.

numpy 1.26's wheels (pinned: bpy 5.0 needs numpy < 2) bundle OpenBLAS 0.3.23, which picks its
kernels by CPU model number. A model it does not know falls back to "Prescott", plain SSE3
kernels: on an Intel Xeon of model 207 (Emerald Rapids, a common cloud CPU in 2026) every numpy
matrix product in the project ran at SSE speed. Measured there: the EVP LSTM's recurrent product
(4, 256) @ (256, 512) took 105 µs on one thread against 24 µs with the SkylakeX kernels, and
``animate`` of 60 s on the numpy engine 0.245 s against 0.082 s (the torch engine, whose BLAS
knows the CPU, was unaffected).

OpenBLAS reads ``OPENBLAS_CORETYPE`` once, when the library loads, so this must run before the
first ``import numpy``: the package's ``__init__`` calls :func:`choose_openblas_kernel`, which
``evp-anim`` and ``python -m evp_anim`` import before anything else. The kernel family is chosen
from the CPU's feature flags, as OpenBLAS maps the models it knows: AVX-512 (F, CD, BW, DQ, VL) →
SkylakeX (also what it uses on Cooper Lake, Sapphire Rapids and Zen 4 for single precision);
AVX2 with FMA → Haswell. AMD's Zen families, which OpenBLAS 0.3.23 knows by number, keep its own
choice; so does a value the user set; and nothing is set off Linux/x86-64 or after numpy is loaded
(too late to matter).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

_AVX512 = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}
_AVX2 = {"avx2", "fma"}


def kernel_for_flags(flags: set[str]) -> str | None:
    """OpenBLAS's kernel family (an ``OPENBLAS_CORETYPE`` value) for a set of /proc/cpuinfo flags,
    or None for a CPU older than Haswell (OpenBLAS's own choice is kept there)."""
    if _AVX512 <= flags:
        return "SkylakeX"
    if _AVX2 <= flags:
        return "Haswell"
    return None


# AMD families OpenBLAS 0.3.23 recognises by number (Zen 1-2: 0x17, Hygon: 0x18, Zen 3-4: 0x19):
# its own choice (its Zen kernels) is kept there, so results stay what they were on those CPUs.
_AMD_FAMILIES_KNOWN = {0x17, 0x18, 0x19}


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's fields from /proc/cpuinfo ("vendor_id", "cpu family", "flags", …);
    empty when unreadable."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break                       # the end of the first processor's block
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def kernel_for_cpu(fields: dict[str, str]) -> str | None:
    """:func:`kernel_for_flags` of a /proc/cpuinfo block (:func:`cpu_info`), or None where OpenBLAS
    knows the CPU by itself (AMD's Zen families)."""
    vendor = fields.get("vendor_id", "")
    try:
        family = int(fields.get("cpu family", ""))
    except ValueError:
        family = -1
    if vendor in ("AuthenticAMD", "HygonGenuine") and family in _AMD_FAMILIES_KNOWN:
        return None
    return kernel_for_flags(set(fields.get("flags", "").split()))


def choose_openblas_kernel(environ=os.environ, cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """Set ``OPENBLAS_CORETYPE`` in ``environ`` from the CPU's flags unless it is set already,
    numpy is already imported, or this is not Linux on x86-64. Returns the value set (or None)."""
    if ("OPENBLAS_CORETYPE" in environ or "numpy" in sys.modules or sys.platform != "linux"
            or platform.machine() not in ("x86_64", "AMD64")):
        return None
    kernel = kernel_for_cpu(cpu_info(cpuinfo))
    if kernel is not None:
        environ["OPENBLAS_CORETYPE"] = kernel
    return kernel
