"""Shared retrieval fixtures: one tiny GCL model (seed 0, eval mode) and its processor per test module."""

import pytest

from gcl_hf import GCLModel
from gcl_hf.testing import tiny_clip, tiny_processor


@pytest.fixture(scope="module")
def model():
    return GCLModel.from_backbone(tiny_clip(seed=0)).eval()


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()
