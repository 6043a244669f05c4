"""Which kernel multiplies the search's tiles: the BLAS choice for float32 tiles, bf16 units, thread limits.

torch's CPU wheel multiplies float32 with MKL; numpy's wheel with OpenBLAS. Which is faster depends on the
CPU (on an AMD EPYC MKL's sgemm can be much slower than OpenBLAS's Zen or SkylakeX kernels; on an Intel Xeon
MKL wins), so the float32 tiles run on either (:data:`MatmulBackend`):

* ``"torch"``: ``torch.mm``;
* ``"numpy"``: ``numpy.matmul`` on the tensors' own memory (``Tensor.numpy()``, no copy); numpy's BLAS
  threads are pinned for the call with threadpoolctl, which this backend needs;
* ``"auto"`` (default): by the CPU's vendor (:func:`auto_backend`): numpy's OpenBLAS on AMD, torch's MKL
  elsewhere.

``GCL_HF_SEARCH_BLAS`` (``torch`` / ``numpy`` / ``auto``) overrides the default. The choice changes no
result: the first pass's float32 bound (:mod:`~gcl_hf.retrieval.search.rescore`) holds for any float32
summation order, and every score returned is the canonical one. bf16 and float64 tiles run on torch.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from collections.abc import Iterator
from typing import Any, Literal, get_args

import numpy as np
import torch

MatmulBackend = Literal["torch", "numpy", "auto"]
BACKENDS: tuple[str, ...] = get_args(MatmulBackend)
ENV_VAR = "GCL_HF_SEARCH_BLAS"


def parse_backend(value: str | None) -> MatmulBackend:
    """The backend named by ``value`` (None or empty: :data:`ENV_VAR`, else ``"auto"``), case-insensitive."""
    source = "matmul backend"
    if not value:
        value, source = os.environ.get(ENV_VAR, "") or "auto", ENV_VAR
    name = value.strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"{source} must be one of {', '.join(BACKENDS)}; got {value!r}")
    return name  # type: ignore[return-value]


def bf16_supported() -> bool:
    """Whether this CPU has bf16 dot-product units (AVX512-BF16 or AMX) that make bf16 matmuls fast."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name)()) for name in checks if hasattr(cpu, name))


@functools.lru_cache(maxsize=1)
def _numpy_blas() -> Any:
    """threadpoolctl's handle on numpy's BLAS (None without threadpoolctl or without a BLAS it knows)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    root = os.path.dirname(np.__file__)
    libs = [lib for lib in ThreadpoolController().select(user_api="blas").lib_controllers
            if os.path.dirname(os.path.dirname(lib.filepath)) == os.path.dirname(root)
            and os.path.basename(os.path.dirname(lib.filepath)).startswith("numpy")]
    return libs[0] if libs else None


def numpy_blas_name() -> str:
    """numpy's BLAS and the kernel it runs, e.g. ``"openblas 0.3.31 (SkylakeX)"`` (what benchmarks report)."""
    lib = _numpy_blas()
    if lib is None:
        return "unknown (threadpoolctl not installed)"
    arch = getattr(lib, "architecture", None)
    return f"{lib.internal_api} {lib.version}" + (f" ({arch})" if arch else "")


@contextlib.contextmanager
def numpy_blas_threads(n: int) -> Iterator[None]:
    """numpy's BLAS on ``n`` threads for the block (restored afterwards). A process-wide setting, like
    ``torch.set_num_threads`` for the calling thread."""
    lib = _numpy_blas()
    if lib is None:
        raise RuntimeError(f"the numpy matmul backend needs threadpoolctl to pin numpy's BLAS threads "
                           f"(pip install threadpoolctl), or set {ENV_VAR}=torch")
    previous = lib.num_threads
    if previous != n:
        lib.set_num_threads(n)
    try:
        yield
    finally:
        if previous != n:
            lib.set_num_threads(previous)


def matmul_into(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, backend: MatmulBackend) -> None:
    """``out = a @ b.T`` for CPU float32 ``a [m, d]``, ``b [n, d]`` on the resolved ``backend``."""
    if backend == "numpy":
        np.matmul(a.detach().numpy(), b.detach().numpy().T, out=out.numpy())
    else:
        torch.mm(a, b.T, out=out)


@functools.cache
def cpu_info() -> dict[str, Any]:
    """The first CPU's ``vendor`` id (``"AuthenticAMD"``, ``"GenuineIntel"``, ...; ``""`` where it cannot be read),
    ``model`` name and ``flags``, from ``/proc/cpuinfo`` (read once), else from `platform`. The benches report
    the same fields."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    processor = platform.processor()  # e.g. Windows: "AMD64 Family 25 Model 17 Stepping 1, AuthenticAMD"
    vendor = fields.get("vendor_id") or next((v for v in ("AuthenticAMD", "GenuineIntel") if v in processor), "")
    return {"vendor": vendor, "model": fields.get("model name") or processor or platform.machine(),
            "flags": fields.get("flags", "").split()}


def cpu_vendor() -> str:
    """The CPU's vendor id (see `cpu_info`): what `auto_backend` decides by."""
    return cpu_info()["vendor"]


@functools.lru_cache(maxsize=1)
def auto_backend() -> MatmulBackend:
    """``"numpy"`` on an AMD CPU where numpy's BLAS is OpenBLAS (and threadpoolctl can pin it), else
    ``"torch"``: MKL takes a slow path on AMD (1.7-1.8x OpenBLAS's Zen kernel on an AVX2 EPYC; 1.07x its
    SkylakeX kernel in CPU time on an AVX-512 EPYC) and is the faster one on Intel. Chosen by vendor, not
    timed: a timing taken on a busy machine would pick at random."""
    lib = _numpy_blas()
    if lib is None or lib.internal_api != "openblas" or cpu_vendor() != "AuthenticAMD":
        return "torch"
    return "numpy"


def resolve_backend(backend: MatmulBackend | str | None = None) -> MatmulBackend:
    """``"torch"`` or ``"numpy"`` for ``backend`` (parsed; ``"auto"``: :func:`auto_backend`)."""
    name = parse_backend(backend)
    return auto_backend() if name == "auto" else name


@contextlib.contextmanager
def ieee_float32_matmuls() -> Iterator[None]:
    """float32 matmuls in full float32 for the block (``torch.set_float32_matmul_precision("medium")``
    would let oneDNN compute them in bf16 on CPU, which the float32 error bound does not cover)."""
    settings = torch.backends.mkldnn.matmul
    previous = settings.fp32_precision
    if previous != "ieee":
        settings.fp32_precision = "ieee"
    try:
        yield
    finally:
        if previous != "ieee":
            settings.fp32_precision = previous
