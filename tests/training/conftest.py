"""Training tests run tiny models: they gain nothing from intra-op threads (and lose a lot on a busy machine)."""

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_thread_per_module(one_thread):  # tests/conftest.py's one_thread, for every training test module
    yield
