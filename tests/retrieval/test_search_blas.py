"""The float32 tiles' BLAS (`gcl_hf.retrieval.search.blas`): one parser for the choice, the override, and
numpy's BLAS threads pinned and restored."""

import pytest
import torch

from gcl_hf.retrieval.search import blas
from gcl_hf.retrieval.search.blas import (
    ENV_VAR,
    matmul_into,
    measured_backend,
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


def test_resolve_backend(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "numpy")
    assert resolve_backend() == "numpy"
    assert resolve_backend("torch") == "torch"
    assert resolve_backend("auto") == measured_backend() in ("torch", "numpy")
    assert measured_backend() is measured_backend()  # measured once per process


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
