"""Training tests run tiny models: they gain nothing from intra-op threads (and lose a lot on a busy machine)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
