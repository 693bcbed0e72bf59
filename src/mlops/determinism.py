"""The same weights on any x86-64 CPU: pin the kernels torch's libraries would pick by instruction set.

oneMKL (matrix products), ATen (torch's own kernels) and oneDNN each choose their code path from the CPU's
instruction set, and paths for AVX-512, AVX2 or SSE round differently, so an unpinned run on a laptop, a CI
runner and a colleague's machine gives three sets of weights. Each library reads its pin from the environment
once, when it loads: `pin_kernels` must run before torch is imported, which is why the CLI calls it before it
imports the stages. `confirm_pinned` then checks, from inside the process, that the pins took.

The level is AVX2 (with FMA): every x86-64 CPU sold in the last decade has it, and it costs 1.1 to 1.3 times
the unpinned training time (SSE4.1 costs 2.4x; bench/bench_determinism.py). oneMKL's AVX2 branch promises
identical results on Intel CPUs only, so oneMKL is held to its COMPATIBLE branch, the one it promises on Intel
and AMD alike (GitHub's runners are often AMD). A CPU without AVX2 is refused with a clear error. Other
architectures (ARM, Apple silicon) have no such pins: their runs repeat on the same kind of machine, and
differ slightly from x86-64 ones.
"""

from __future__ import annotations

import logging
import os
import platform

from mlops.config import ReproducibilityParams
from mlops.errors import MlopsError

log = logging.getLogger(__name__)

PINNED_CAPABILITY = "AVX2"
KERNEL_PINS = {
    "MKL_CBWR": "COMPATIBLE",
    "ATEN_CPU_CAPABILITY": PINNED_CAPABILITY.lower(),
    "DNNL_MAX_CPU_ISA": PINNED_CAPABILITY,
}
X86_64 = {"x86_64", "amd64"}


class KernelPinError(MlopsError):
    """The CPU kernels cannot be pinned as reproducibility.pin_cpu_kernels asks."""


def _is_x86_64() -> bool:
    return platform.machine().lower() in X86_64


def _has_avx2() -> bool:
    # numpy detects the CPU's features on every OS and does not load oneMKL.
    from numpy._core._multiarray_umath import __cpu_features__

    return bool(__cpu_features__.get("AVX2") and __cpu_features__.get("FMA3"))


def pin_kernels(settings: ReproducibilityParams) -> None:
    """Put the kernel pins in the environment; call before torch is imported."""
    if not settings.pin_cpu_kernels or not _is_x86_64():
        return
    if not _has_avx2():
        raise KernelPinError(
            f"this CPU lacks {PINNED_CAPABILITY} and FMA, the level reproducibility.pin_cpu_kernels pins kernels to: "
            "set reproducibility.pin_cpu_kernels: false in params.yaml (results then differ from other machines')"
        )
    os.environ.update(KERNEL_PINS)


def confirm_pinned(settings: ReproducibilityParams) -> None:
    """Check, after torch has loaded, that its kernels are the pinned ones; say which are in use."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    if not settings.pin_cpu_kernels:
        log.info("CPU kernels not pinned (reproducibility.pin_cpu_kernels: false): ATen uses %s", capability)
    elif not _is_x86_64():
        log.info("CPU kernels not pinned on %s: results repeat on this kind of machine only", platform.machine())
    elif capability != PINNED_CAPABILITY:
        raise KernelPinError(
            f"ATen kernels are {capability}, not the pinned {PINNED_CAPABILITY}: "
            "torch was loaded before the pins were set"
        )
    else:
        log.info("CPU kernels pinned for reproducibility: %s", ", ".join(f"{k}={v}" for k, v in KERNEL_PINS.items()))
