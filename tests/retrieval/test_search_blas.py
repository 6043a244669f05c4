"""The float32 tiles' BLAS (`gcl_hf.retrieval.search.blas`): one parser for the choice, the override, and
numpy's BLAS threads pinned and restored."""

import pytest
import torch

from gcl_hf.retrieval.search import blas
from gcl_hf.retrieval.search.blas import (
    ENV_VAR,
    auto_backend,
    cpu_info,
    cpu_vendor,
    matmul_into,
    numpy_blas_name,
    numpy_blas_threads,
    parse_backend,
    resolve_backend,
)


def test_parse_backend(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert parse_backend(None) == "auto"
    assert parse_backend(" NumPy ") == "numpy"
    monkeypatch.setenv(ENV_VAR, "torch")
    assert parse_backend(None) == "torch" and parse_backend("numpy") == "numpy"  # an argument beats the variable
    with pytest.raises(ValueError, match=r"^matmul backend must be one of torch, numpy, auto; got 'mkl'$"):
        parse_backend("mkl")
    monkeypatch.setenv(ENV_VAR, "openblas")
    with pytest.raises(ValueError, match=rf"^{ENV_VAR} must be one of torch, numpy, auto; got 'openblas'$"):
        parse_backend(None)


def test_cpu_info_reads_the_first_processor_once():
    info = cpu_info()
    assert info is cpu_info() and cpu_vendor() == info["vendor"]
    assert isinstance(info["model"], str) and info["model"]
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        pytest.skip("no /proc/cpuinfo: the platform fallback is used")
    first = text.split("\n\n", 1)[0]
    if "vendor_id" in first:
        assert f"vendor_id\t: {info['vendor']}" in first
    if "flags" in first:
        assert info["flags"] and f"flags\t\t: {' '.join(info['flags'])}" in first


def test_resolve_backend(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "numpy")
    assert resolve_backend() == "numpy"
    assert resolve_backend("torch") == "torch"
    vendor, lib = cpu_vendor(), blas._numpy_blas()
    expected = "numpy" if vendor == "AuthenticAMD" and lib is not None and lib.internal_api == "openblas" else "torch"
    assert resolve_backend("auto") == auto_backend() == expected


def test_auto_backend_by_vendor(monkeypatch):
    for vendor, expected in [("AuthenticAMD", "numpy"), ("GenuineIntel", "torch"), ("", "torch")]:
        auto_backend.cache_clear()
        monkeypatch.setattr(blas, "cpu_vendor", lambda v=vendor: v)
        assert auto_backend() == (expected if blas._numpy_blas().internal_api == "openblas" else "torch"), vendor
    auto_backend.cache_clear()
    monkeypatch.setattr(blas, "_numpy_blas", lambda: None)  # no threadpoolctl: numpy's threads can't be pinned
    monkeypatch.setattr(blas, "cpu_vendor", lambda: "AuthenticAMD")
    assert auto_backend() == "torch"
    auto_backend.cache_clear()


def test_numpy_matmul_into_tensor_memory_and_threads_restored():
    lib = blas._numpy_blas()
    assert lib is not None and numpy_blas_name().startswith(lib.internal_api)
    before = lib.num_threads
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 40, generator=g), torch.randn(300, 40, generator=g)
    out = torch.full((7, 300), float("nan"))
    with torch.inference_mode(), numpy_blas_threads(1):
        assert lib.num_threads == 1
        matmul_into(a, b[::1], out, "numpy")  # written in place, into the tensor's own memory
    assert lib.num_threads == before
    torch.testing.assert_close(out, a @ b.T, rtol=0, atol=1e-5)
    ref = torch.empty(7, 300)
    matmul_into(a, b, ref, "torch")
    assert torch.equal(ref, torch.mm(a, b.T))


def test_numpy_backend_without_threadpoolctl_names_the_fix(monkeypatch):
    monkeypatch.setattr(blas, "_numpy_blas", lambda: None)
    with pytest.raises(RuntimeError, match=f"needs threadpoolctl.*{ENV_VAR}=torch"), numpy_blas_threads(1):
        pass
