"""Shared test set-up: no Hub, tiny deterministic models, small threads."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

# shared helpers (benchmark fixtures, the fake Hub, subprocess scripts) import as top-level modules
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine thread barriers make them
    10x slower: one thread for a module, the session's setting restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_processor():
    from gcl_hf.testing import tiny_processor as make

    return make()


@pytest.fixture
def tiny_clip():
    from gcl_hf.testing import tiny_clip as make

    return make()
